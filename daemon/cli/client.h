// daemon/cli/client.h — a small blocking client of the socket protocol, for the
// `nearcache` CLI (and C++ tests): connect with a timeout, send one request,
// wait for the reply with the same id.
#pragma once

#include <cstdint>
#include <msgpack.hpp>
#include <string>

namespace nearcache::daemon {

class BlockingClient {
 public:
  BlockingClient() = default;
  ~BlockingClient();
  BlockingClient(const BlockingClient&) = delete;
  BlockingClient& operator=(const BlockingClient&) = delete;

  // Returns false with a one-line reason.
  bool connect(const std::string& path, int timeout_ms, std::string* err);
  // `args` packs the request's arguments into the packer (may be empty).
  // The reply is the whole frame [id, status, ...].
  template <typename F>
  bool call(uint32_t op, F&& args, uint32_t nargs, msgpack::object_handle* reply, std::string* err) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_array(2 + nargs);
    pk.pack_uint32(op);
    pk.pack_uint64(++next_id_);
    args(pk);
    return roundtrip(buf.data(), buf.size(), next_id_, reply, err);
  }

 private:
  bool roundtrip(const char* data, size_t len, uint64_t id, msgpack::object_handle* reply, std::string* err);

  int fd_ = -1;
  int timeout_ms_ = 5000;
  uint64_t next_id_ = 0;
  msgpack::unpacker unpacker_;
};

}  // namespace nearcache::daemon
