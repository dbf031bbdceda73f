// daemon/protocol/frame.cc — incremental msgpack frame scanner. See frame.h.
#include "protocol/frame.h"

namespace nearcache::daemon {

namespace {
uint64_t be(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}
}  // namespace

void FrameScanner::reset() {
  pos_ = 0;
  depth_ = 0;
  index1_ = 0;
  has_id_ = false;
  id_ = 0;
  error_.clear();
}

FrameScanner::Result FrameScanner::fail(Result r, std::string msg) {
  error_ = std::move(msg);
  return r;
}

// One element finished: count it against its container, closing containers
// whose last element it was (each of which is an element of its parent).
void FrameScanner::element_done() {
  while (depth_ > 0) {
    if (depth_ == 1) ++index1_;
    if (--left_[depth_ - 1] > 0) return;
    --depth_;
  }
}

FrameScanner::Result FrameScanner::scan(const unsigned char* buf, size_t len) {
  for (;;) {
    // Done when the last element closed the array and its payload is here.
    if (pos_ > 0 && depth_ == 0) return pos_ <= len ? Result::complete : Result::need_more;
    if (pos_ >= len) return Result::need_more;
    const unsigned char t = buf[pos_];
    size_t hdr = 1;        // type byte + length/value bytes
    uint64_t payload = 0;  // bytes skipped after the header (str, bin, ext)
    uint64_t children = 0;
    bool container = false;
    int len_bytes = 0, int_bytes = 0;  // big-endian length field / integer value after the type byte
    bool is_signed = false, is_int = false;
    uint64_t ival = 0;
    if (t <= 0x7f) {
      is_int = true;
      ival = t;
    } else if (t <= 0x8f) {
      container = true;
      children = 2 * uint64_t(t & 0x0f);
    } else if (t <= 0x9f) {
      container = true;
      children = t & 0x0f;
    } else if (t <= 0xbf) {
      payload = t & 0x1f;
    } else if (t >= 0xe0) {
      is_int = true;  // negative fixint: not a valid id
      is_signed = true;
    } else {
      switch (t) {
        case 0xc0: case 0xc2: case 0xc3: break;
        case 0xc1: return fail(Result::bad, "BAD_FRAME: byte 0xc1 is not valid msgpack");
        case 0xc4: case 0xd9: len_bytes = 1; break;
        case 0xc5: case 0xda: len_bytes = 2; break;
        case 0xc6: case 0xdb: len_bytes = 4; break;
        case 0xc7: len_bytes = 1; hdr = 1; break;  // ext: + 1 type byte, below
        case 0xc8: len_bytes = 2; break;
        case 0xc9: len_bytes = 4; break;
        case 0xca: hdr = 5; break;
        case 0xcb: hdr = 9; break;
        case 0xcc: int_bytes = 1; break;
        case 0xcd: int_bytes = 2; break;
        case 0xce: int_bytes = 4; break;
        case 0xcf: int_bytes = 8; break;
        case 0xd0: int_bytes = 1; is_signed = true; break;
        case 0xd1: int_bytes = 2; is_signed = true; break;
        case 0xd2: int_bytes = 4; is_signed = true; break;
        case 0xd3: int_bytes = 8; is_signed = true; break;
        case 0xd4: hdr = 2; payload = 1; break;
        case 0xd5: hdr = 2; payload = 2; break;
        case 0xd6: hdr = 2; payload = 4; break;
        case 0xd7: hdr = 2; payload = 8; break;
        case 0xd8: hdr = 2; payload = 16; break;
        case 0xdc: container = true; len_bytes = 2; break;
        case 0xdd: container = true; len_bytes = 4; break;
        case 0xde: container = true; len_bytes = 2; break;
        case 0xdf: container = true; len_bytes = 4; break;
        default: return fail(Result::bad, "BAD_FRAME: invalid msgpack type byte");
      }
      hdr += size_t(len_bytes + int_bytes);
      if (t >= 0xc7 && t <= 0xc9) hdr += 1;  // ext type
      if (int_bytes) is_int = true;
    }
    if (pos_ + hdr > max_)
      return fail(Result::too_large, "FRAME_TOO_LARGE: frame longer than the limit of " + std::to_string(max_) + " bytes");
    if (pos_ + hdr > len) return Result::need_more;
    if (len_bytes) {
      const uint64_t n = be(buf + pos_ + 1, len_bytes);
      if (!container) payload = n;
      else children = (t == 0xde || t == 0xdf) ? 2 * n : n;
    }
    if (int_bytes) ival = be(buf + pos_ + 1, int_bytes);
    if (pos_ == 0 && !(container && (t <= 0x9f ? t >= 0x90 : (t == 0xdc || t == 0xdd))))
      return fail(Result::bad, "BAD_FRAME: a frame must be a msgpack array");
    // Every child takes at least one byte: a lower bound on where the frame ends.
    const uint64_t end = uint64_t(pos_) + hdr + payload + children;
    if (end > max_)
      return fail(Result::too_large, "FRAME_TOO_LARGE: frame of at least " + std::to_string(end) +
                                         " bytes, over the limit of " + std::to_string(max_));
    if (depth_ == 1 && index1_ == 1 && is_int) {
      // A negative signed encoding is not an id; a non-negative one is.
      const bool negative = is_signed && (int_bytes == 0 || (ival >> (8 * int_bytes - 1)) != 0);
      if (!negative) {
        has_id_ = true;
        id_ = ival;
      }
    }
    pos_ += hdr + payload;
    if (container && children > 0) {
      if (depth_ == kMaxDepth) return fail(Result::bad, "BAD_FRAME: nested deeper than 16 levels");
      left_[depth_++] = children;
    } else {
      element_done();
    }
  }
}

}  // namespace nearcache::daemon
