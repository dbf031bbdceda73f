// tests/daemon_units/engine_harness.h — an Engine on a real table in a temporary
// directory, driven through Sessions without sockets.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <msgpack.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "writer.h"

namespace nctest_daemon {

using namespace nearcache::daemon;

struct Harness {
  std::string dir;
  std::unique_ptr<nearcache::shm::Writer> writer;
  Config cfg;
  std::unique_ptr<Engine> engine;
  std::vector<std::unique_ptr<Session>> sessions;
  int clear_hooks = 0, deadline_hooks = 0;

  explicit Harness(uint64_t segment_bytes = 16 << 20, Config c = Config()) : cfg(c) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "nearcache-engine-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp");
    dir = tmpl;
    nearcache::shm::WriterOptions o;
    o.path = dir + "/seg";
    o.segment_bytes = segment_bytes;
    o.key_limit = uint32_t(cfg.key_limit);
    o.value_limit = uint32_t(cfg.value_limit);
    o.expected_item_bytes = 64;
    std::string why;
    writer = nearcache::shm::Writer::create(o, &why);
    if (!writer) throw std::runtime_error(why);
    if (cfg.max_frame_bytes == 0) cfg.max_frame_bytes = (4u << 20) + cfg.key_limit + cfg.value_limit;
    engine = std::make_unique<Engine>(writer.get(), cfg);
    engine->set_hooks({nullptr, [this] { clear_hooks++; }, [this] { deadline_hooks++; }, nullptr});
  }
  ~Harness() {
    engine.reset();
    writer.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  Session* connect() {
    sessions.push_back(std::make_unique<Session>());
    Session* s = sessions.back().get();
    s->id = sessions.size();
    engine->attach(s);
    return s;
  }
  void disconnect(Session* s) { engine->detach(s); }

  void send_raw(Session* s, const std::string& bytes) {
    s->in.append(bytes.data(), bytes.size());
    engine->feed(s);
  }
  template <typename... T>
  static std::string req(uint32_t op, uint64_t id, const T&... args) {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(2 + sizeof...(args));
    pk.pack(op);
    pk.pack(id);
    (pk.pack(args), ...);
    return std::string(b.data(), b.size());
  }
  template <typename... T>
  void send(Session* s, uint32_t op, uint64_t id, const T&... args) {
    send_raw(s, req(op, id, args...));
  }
  // Every complete reply in s->out, removed from it.
  std::vector<msgpack::object_handle> replies(Session* s) {
    std::vector<msgpack::object_handle> out;
    size_t off = 0;
    const std::string& b = s->out.bytes;
    while (off < b.size()) out.push_back(msgpack::unpack(b.data(), b.size(), off));
    s->out.bytes.clear();
    return out;
  }
  msgpack::object_handle one(Session* s) {
    auto r = replies(s);
    if (r.size() != 1) throw std::runtime_error("expected one reply, got " + std::to_string(r.size()));
    return std::move(r[0]);
  }
  template <typename... T>
  msgpack::object_handle call(Session* s, uint32_t op, const T&... args) {
    send(s, op, ++next_id, args...);
    return one(s);
  }
  uint64_t next_id = 100;
};

inline int code_of(const msgpack::object_handle& h) { return int(h.get().via.array.ptr[1].via.u64); }
inline uint64_t id_of(const msgpack::object_handle& h) { return h.get().via.array.ptr[0].via.u64; }
inline const msgpack::object& arg(const msgpack::object_handle& h, size_t i) { return h.get().via.array.ptr[i]; }
inline std::string bytes(const msgpack::object& o) {
  return o.type == msgpack::type::BIN ? std::string(o.via.bin.ptr, o.via.bin.size) : std::string(o.via.str.ptr, o.via.str.size);
}
inline std::string bin(const std::string& s) { return s; }

// msgpack-c packs std::string as str; keys and values may be str or bin.
struct Bin {
  std::string b;
};

}  // namespace nctest_daemon

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<nctest_daemon::Bin> {
    template <typename Stream>
    packer<Stream>& operator()(packer<Stream>& o, const nctest_daemon::Bin& v) const {
      o.pack_bin(uint32_t(v.b.size()));
      o.pack_bin_body(v.b.data(), uint32_t(v.b.size()));
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack
