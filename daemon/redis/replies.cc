// daemon/redis/replies.cc — see replies.h.
#include "redis/replies.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace nearcache::redis {


ReplyParser::ReplyParser(uint64_t max_reply_bytes) : r_(redisReaderCreate()), max_(max_reply_bytes) {}

ReplyParser::~ReplyParser() {
  if (r_) redisReaderFree(r_);
}

// Walks the stream's lines: each header line is checked by header(); a
// bulk string's payload is skipped by its announced length.
bool ReplyParser::scan(const char* p, size_t n, std::string* err) {
  while (n > 0) {
    if (skip_ > 0) {
      const size_t k = size_t(std::min<uint64_t>(skip_, n));
      skip_ -= k, p += k, n -= k;
      continue;
    }
    const char* nl = static_cast<const char*>(memchr(p, '\n', n));
    const size_t k = nl ? size_t(nl - p) + 1 : n;
    for (size_t i = 0; i < k && line_len_ + i < sizeof line_; ++i) line_[line_len_ + i] = p[i];
    line_len_ += k;
    p += k, n -= k;
    if (nl) {
      if (!header(err)) return false;
      line_len_ = 0;
    }
  }
  return true;
}

bool ReplyParser::header(std::string* err) {
  const char type = line_[0];
  if (type != '*' && type != '$') return true;
  int64_t v = 0;
  bool neg = false;
  size_t i = 1;
  if (i < line_len_ && i < sizeof line_ && line_[i] == '-') neg = true, i++;
  for (; i < line_len_ && i < sizeof line_ && line_[i] >= '0' && line_[i] <= '9'; ++i) {
    if (v > (INT64_MAX - 9) / 10) v = INT64_MAX;
    else v = v * 10 + (line_[i] - '0');
  }
  if (neg) return true;  // nil: hiredis checks the rest
  const uint64_t u = uint64_t(v);
  if (type == '$') {
    if (max_ && u > max_) {
      *err = "a reply of more than " + std::to_string(max_) + " bytes (max_reply_bytes) was refused";
      return false;
    }
    skip_ = u > UINT64_MAX - 2 ? UINT64_MAX : u + 2;
    return true;
  }
  const uint64_t cap = max_ ? std::min<uint64_t>(kMaxElements, max_ / 3 + 1) : kMaxElements;
  if (u > cap) {
    *err = "a reply array of " + std::to_string(u) + " elements (more than " + std::to_string(cap) + ") was refused";
    return false;
  }
  return true;
}

bool ReplyParser::feed(const char* bytes, size_t len, std::string* err) {
  if (!scan(bytes, len, err)) return false;
  if (!r_ || redisReaderFeed(r_, bytes, len) != REDIS_OK) {
    *err = "out of memory";
    return false;
  }
  return true;
}

bool ReplyParser::next(redisReply** out, std::string* err) {
  void* reply = nullptr;
  *out = nullptr;
  if (!r_ || redisReaderGetReply(r_, &reply) != REDIS_OK) {
    *err = std::string("protocol error: ") + (r_ ? r_->errstr : "out of memory");
    return false;
  }
  *out = static_cast<redisReply*>(reply);
  return true;
}

bool ReplyParser::within_bound(std::string* err) const {
  if (max_ == 0 || !r_ || !r_->buf) return true;
  // Headers were checked as they came (scan); this bounds what an
  // incomplete array holds so far.
  if (r_->len - r_->pos <= max_) return true;
  *err = "a reply of more than " + std::to_string(max_) + " bytes (max_reply_bytes) was refused";
  return false;
}

bool is_pubsub(const redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING) return false;
  const std::string_view k(r->element[0]->str, r->element[0]->len);
  return k == "message" || k == "pmessage" || k == "subscribe" || k == "unsubscribe" || k == "psubscribe" ||
         k == "punsubscribe" || k == "smessage" || k == "ssubscribe" || k == "sunsubscribe";
}

}  // namespace nearcache::redis
