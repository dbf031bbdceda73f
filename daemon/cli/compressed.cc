// daemon/cli/compressed.cc — see compressed.h; the frame and its codecs are
// shm/compressed_frame.h's, shared with the client's native module.
#include "cli/compressed.h"

namespace nearcache::daemon {

std::string codec_name(int codec) {
  if (const char* name = compressed::codec_name(codec)) return name;
  return "codec " + std::to_string(codec);
}

int64_t frame_length(std::string_view f) {
  uint64_t len = 0;
  const auto* p = reinterpret_cast<const uint8_t*>(f.data());
  return compressed::read_header(p, f.size(), &len) == compressed::Header::ok ? int64_t(len) : -1;
}

bool decompress_frame(int codec, std::string_view frame, std::string* out, std::string* err) {
  const int64_t len = frame_length(frame);
  if (len < 0) return *err = "not a compressed frame (no 0xC1 header)", false;
  if (!codec_native(codec)) return *err = codec_name(codec) + " is not decompressed by this CLI", false;
  const auto* body = reinterpret_cast<const uint8_t*>(frame.data()) + compressed::kFrameHeader;
  const size_t n = frame.size() - compressed::kFrameHeader;
  if (!compressed::plausible(codec, body, n, uint64_t(len)))
    return *err = "length header larger than the data can hold", false;
  out->assign(size_t(len), '\0');
  if (compressed::decompress_body(codec, body, n, out->data(), size_t(len))) return true;
  out->clear();
  *err = "corrupt " + codec_name(codec) + " data";
  return false;
}

}  // namespace nearcache::daemon
