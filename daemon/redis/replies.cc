// daemon/redis/replies.cc — see replies.h.
#include "redis/replies.h"

#include <hiredis/hiredis.h>

#include <string_view>

namespace nearcache::redis {

namespace {
// The length a bulk string header at `buf` announces, or -1 when `buf` does
// not start with a complete one.
int64_t bulk_length(const char* buf, size_t len) {
  if (len < 2 || buf[0] != '$') return -1;
  int64_t v = 0;
  for (size_t i = 1; i < len && i < 21; ++i) {
    if (buf[i] == '\r') return i > 1 ? v : -1;
    if (buf[i] < '0' || buf[i] > '9') return -1;
    v = v * 10 + (buf[i] - '0');
  }
  return -1;
}
}  // namespace

ReplyParser::ReplyParser(uint64_t max_reply_bytes) : r_(redisReaderCreate()), max_(max_reply_bytes) {}

ReplyParser::~ReplyParser() {
  if (r_) redisReaderFree(r_);
}

bool ReplyParser::feed(const char* bytes, size_t len, std::string* err) {
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
  const size_t buffered = r_->len - r_->pos;
  const int64_t announced = bulk_length(r_->buf + r_->pos, buffered);
  if (buffered <= max_ && (announced < 0 || uint64_t(announced) <= max_)) return true;
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
