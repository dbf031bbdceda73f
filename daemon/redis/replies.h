// daemon/redis/replies.h — the Link's reply parser: plaintext from the
// transport into hiredis's redisReader, complete replies out in order.
//
// hiredis's reader has no size limit and allocates an array's element
// pointers as soon as it reads the array's header, so every header line is
// scanned here before hiredis sees it (bulk payloads are skipped, not
// scanned): an array may announce at most kMaxElements elements (or
// max_reply_bytes / 3, the fewest bytes that many elements take), a bulk
// string at most max_reply_bytes. What the reader buffers of an incomplete
// reply is bounded by max_reply_bytes too. Past a bound the Link closes the
// connection (a reply cannot be skipped without reading it). Also the one
// place that tells pub/sub messages from replies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

struct redisReader;
struct redisReply;

namespace nearcache::redis {

class ReplyParser {
 public:
  explicit ReplyParser(uint64_t max_reply_bytes = 0);  // 0 = no bound
  ~ReplyParser();
  ReplyParser(const ReplyParser&) = delete;
  ReplyParser& operator=(const ReplyParser&) = delete;

  static constexpr uint64_t kMaxElements = 1u << 24;

  // Buffers bytes; false with *err (out of memory, a header over a bound, a
  // header line that is not RESP).
  bool feed(const char* bytes, size_t len, std::string* err);
  // The next complete reply into *out (the caller frees it with
  // freeReplyObject), or *out = nullptr when none is complete; false with
  // *err on a protocol error (the stream cannot be read further).
  bool next(redisReply** out, std::string* err);
  // After next() gave nullptr: false with *err when the incomplete reply is
  // over the bound.
  bool within_bound(std::string* err) const;

 private:
  bool scan(const char* bytes, size_t len, std::string* err);
  bool header(std::string* err);

  redisReader* r_;
  uint64_t max_;
  uint64_t skip_ = 0;     // bulk payload bytes (and its CRLF) still to pass over
  char line_[24];         // the start of the header line being read
  size_t line_len_ = 0;   // its length so far (may exceed sizeof line_)
};

// A RESP2 pub/sub message or (un)subscribe confirmation: an array whose
// first element names the kind.
bool is_pubsub(const redisReply* r);

}  // namespace nearcache::redis
