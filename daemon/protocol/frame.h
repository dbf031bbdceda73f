// daemon/protocol/frame.h — finds where one msgpack frame ends in a byte stream,
// incrementally, and enforces max_frame_bytes from the headers.
//
// The scanner walks type headers only (a str/bin/ext payload is skipped by its
// length, never read), so it costs O(elements) per frame however the bytes
// arrive: it resumes where it stopped when more bytes come. It rejects a frame
// as soon as a header shows that the frame would end past the limit, so a huge
// value is refused before it is buffered. It also picks up `op` and `id` on
// the way, so that a framing error can still name the request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace nearcache::daemon {

class FrameScanner {
 public:
  enum class Result { need_more, complete, too_large, bad };
  static constexpr int kMaxDepth = 16;  // the protocol needs 3

  explicit FrameScanner(uint64_t max_frame_bytes = 1 << 20) : max_(max_frame_bytes) {}
  void set_limit(uint64_t max_frame_bytes) { max_ = max_frame_bytes; }
  void reset();

  // `buf[0..len)` holds the frame's bytes received so far (the same prefix on
  // every call, growing). complete: the frame is buf[0..size()).
  Result scan(const unsigned char* buf, size_t len);

  size_t size() const { return pos_; }
  // Bytes the frame needs at least (for buffer reservation); valid on need_more.
  size_t needed() const { return pos_; }
  const std::string& error() const { return error_; }
  bool has_id() const { return has_id_; }
  uint64_t id() const { return id_; }

 private:
  Result fail(Result r, std::string msg);
  void element_done();

  uint64_t max_;
  size_t pos_ = 0;       // next header to read; may run past len while a payload is missing
  int depth_ = 0;        // open containers
  uint64_t left_[kMaxDepth];   // elements still to come in each open container
  uint64_t index1_ = 0;  // index of the next element of the top-level array
  bool has_id_ = false;
  uint64_t id_ = 0;
  std::string error_;
};

}  // namespace nearcache::daemon
