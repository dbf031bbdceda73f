// daemon/redis/replies.h — the Link's reply parser: plaintext from the
// transport into hiredis's redisReader, complete replies out in order.
//
// hiredis's reader has no size limit, so the bound (max_reply_bytes) is
// checked here, on what the reader holds of the reply still incomplete: a
// bulk string is refused as soon as its header ("$<n>\r\n") announces more
// than the bound, anything else once the bytes buffered for it pass it. The
// Link then closes the connection (a reply cannot be skipped without reading
// it). Also the one place that tells pub/sub messages from replies.
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

  // Buffers bytes; false with *err (out of memory).
  bool feed(const char* bytes, size_t len, std::string* err);
  // The next complete reply into *out (the caller frees it with
  // freeReplyObject), or *out = nullptr when none is complete; false with
  // *err on a protocol error (the stream cannot be read further).
  bool next(redisReply** out, std::string* err);
  // After next() gave nullptr: false with *err when the incomplete reply is
  // over the bound.
  bool within_bound(std::string* err) const;

 private:
  redisReader* r_;
  uint64_t max_;
};

// A RESP2 pub/sub message or (un)subscribe confirmation: an array whose
// first element names the kind.
bool is_pubsub(const redisReply* r);

}  // namespace nearcache::redis
