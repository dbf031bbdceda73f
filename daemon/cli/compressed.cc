// daemon/cli/compressed.cc — see compressed.h.
#include "cli/compressed.h"

#include <lz4.h>
#include <zlib.h>
#include <zstd.h>

#include <climits>

namespace nearcache::daemon {

namespace {
constexpr uint8_t kFrameMarker = 0xC1;
constexpr size_t kFrameHeader = 5;
constexpr uint64_t kMaxUncompressed = uint64_t(1) << 30;  // a larger header is corrupt, not allocated

// Whether the announced length is possible for the compressed size, so that a
// damaged header never makes the CLI allocate more than the codec can produce
// (zlib expands at most ~1032:1, an lz4 block ~255:1; a zstd frame states its size).
bool plausible(int codec, std::string_view body, uint64_t len) {
  switch (codec) {
    case 1: return len <= body.size() * 1032 + 64;
    case 2: return ZSTD_getFrameContentSize(body.data(), body.size()) == len;
    case 3: return len <= body.size() * 255 + 64;
  }
  return false;
}
}  // namespace

std::string codec_name(int codec) {
  switch (codec) {
    case 1: return "zlib";
    case 2: return "zstd";
    case 3: return "lz4";
    case 4: return "lzma";
    case 5: return "class";
  }
  return "codec " + std::to_string(codec);
}

int64_t frame_length(std::string_view f) {
  if (f.size() < kFrameHeader || uint8_t(f[0]) != kFrameMarker) return -1;
  const uint64_t len = uint64_t(uint8_t(f[1])) << 24 | uint64_t(uint8_t(f[2])) << 16 |
                       uint64_t(uint8_t(f[3])) << 8 | uint64_t(uint8_t(f[4]));
  return len > kMaxUncompressed ? -1 : int64_t(len);
}

bool decompress_frame(int codec, std::string_view frame, std::string* out, std::string* err) {
  const int64_t len = frame_length(frame);
  if (len < 0) return *err = "not a compressed frame (no 0xC1 header)", false;
  if (!codec_native(codec)) return *err = codec_name(codec) + " is not decompressed by this CLI", false;
  const std::string_view body = frame.substr(kFrameHeader);
  if (!plausible(codec, body, uint64_t(len))) return *err = "length header larger than the data can hold", false;
  out->assign(size_t(len), '\0');
  bool ok = false;
  switch (codec) {
    case 1: {
      uLongf got = uLongf(len);
      ok = uncompress(reinterpret_cast<Bytef*>(out->data()), &got, reinterpret_cast<const Bytef*>(body.data()),
                      uLong(body.size())) == Z_OK &&
           got == uLongf(len);
      break;
    }
    case 2: {
      const size_t got = ZSTD_decompress(out->data(), out->size(), body.data(), body.size());
      ok = !ZSTD_isError(got) && got == size_t(len);
      break;
    }
    case 3:
      ok = body.size() <= size_t(INT_MAX) &&
           LZ4_decompress_safe(body.data(), out->data(), int(body.size()), int(len)) == int(len);
      break;
  }
  if (!ok) {
    out->clear();
    *err = "corrupt " + codec_name(codec) + " data";
  }
  return ok;
}

}  // namespace nearcache::daemon
