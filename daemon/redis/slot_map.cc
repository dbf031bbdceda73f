// daemon/redis/slot_map.cc — see slot_map.h.
#include "redis/slot_map.h"

#include <hiredis/hiredis.h>

#include "redis/slots.h"

namespace nearcache::redis {

namespace {

std::string_view sv(const redisReply* x) {
  return x && (x->type == REDIS_REPLY_STRING || x->type == REDIS_REPLY_STATUS) ? std::string_view(x->str, x->len)
                                                                               : std::string_view();
}

bool range(SlotMap* m, long long a, long long b, int owner, std::string* err) {
  if (a < 0 || b < a || b >= kSlots) return *err = "slot range out of bounds", false;
  for (long long s = a; s <= b; ++s) m->owner[size_t(s)] = owner;
  return true;
}

// "host:port" (the last colon: [v6]:port or v6:port as Redis writes it).
bool parse_hostport(std::string_view s, HostPort* out) {
  const size_t c = s.rfind(':');
  if (c == std::string_view::npos || c == 0) return false;
  std::string_view h = s.substr(0, c);
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  unsigned long port = 0;
  for (char ch : s.substr(c + 1)) {
    if (ch < '0' || ch > '9') return false;
    port = port * 10 + unsigned(ch - '0');
    if (port > 65535) return false;
  }
  if (port == 0) return false;
  out->host = std::string(h);
  out->port = uint16_t(port);
  return true;
}

}  // namespace

size_t SlotMap::covered() const {
  size_t n = 0;
  for (int o : owner) n += o >= 0;
  return n;
}

int SlotMap::find(const HostPort& m) const {
  for (size_t i = 0; i < masters.size(); ++i)
    if (masters[i] == m) return int(i);
  return -1;
}

int SlotMap::add(const HostPort& m) {
  const int i = find(m);
  if (i >= 0) return i;
  masters.push_back(m);
  return int(masters.size() - 1);
}

bool cluster_enabled(std::string_view info) { return info.find("cluster_enabled:1") != std::string_view::npos; }

bool parse_cluster_shards(const redisReply* r, const std::string& asked, bool tls, SlotMap* out,
                          std::string* err) {
  *out = SlotMap{};
  out->owner.assign(kSlots, -1);
  if (!r || r->type != REDIS_REPLY_ARRAY) return *err = "CLUSTER SHARDS: not an array", false;
  for (size_t i = 0; i < r->elements; ++i) {
    const redisReply* shard = r->element[i];
    if (shard->type != REDIS_REPLY_ARRAY || shard->elements % 2) return *err = "CLUSTER SHARDS: bad shard", false;
    const redisReply *slots = nullptr, *nodes = nullptr;
    for (size_t f = 0; f + 1 < shard->elements; f += 2) {
      if (sv(shard->element[f]) == "slots") slots = shard->element[f + 1];
      else if (sv(shard->element[f]) == "nodes") nodes = shard->element[f + 1];
    }
    if (!slots || !nodes || slots->type != REDIS_REPLY_ARRAY || nodes->type != REDIS_REPLY_ARRAY)
      return *err = "CLUSTER SHARDS: shard without slots or nodes", false;
    if (slots->elements == 0) continue;  // a shard without slots (being added)
    HostPort master;
    bool online = false;
    for (size_t n = 0; n < nodes->elements; ++n) {
      const redisReply* node = nodes->element[n];
      if (node->type != REDIS_REPLY_ARRAY) continue;
      HostPort hp;
      std::string_view role, health, ip, endpoint;
      long long port = -1, tls_port = -1;
      for (size_t f = 0; f + 1 < node->elements; f += 2) {
        const std::string_view k = sv(node->element[f]);
        const redisReply* v = node->element[f + 1];
        if (k == "role") role = sv(v);
        else if (k == "health") health = sv(v);
        else if (k == "ip") ip = sv(v);
        else if (k == "endpoint") endpoint = sv(v);
        else if (k == "port" && v->type == REDIS_REPLY_INTEGER) port = v->integer;
        else if (k == "tls-port" && v->type == REDIS_REPLY_INTEGER) tls_port = v->integer;
      }
      if (role != "master") continue;
      // The port this client can speak to: a TLS-only node reports port 0, a
      // node with both serves TLS on tls-port only.
      const long long p = tls ? (tls_port > 0 ? tls_port : port) : (port > 0 ? port : tls_port);
      hp.host = std::string(!endpoint.empty() && endpoint != "?" ? endpoint : ip);
      if (hp.host.empty() || hp.host == "?") hp.host = asked;
      if (p <= 0 || p > 65535) continue;
      hp.port = uint16_t(p);
      if (master.host.empty() || (!online && health == "online")) master = hp, online = health == "online";
    }
    if (master.host.empty()) continue;  // no master known: its slots stay unserved
    const int owner = out->add(master);
    if (slots->elements % 2) return *err = "CLUSTER SHARDS: odd slot list", false;
    for (size_t s = 0; s + 1 < slots->elements; s += 2) {
      if (slots->element[s]->type != REDIS_REPLY_INTEGER || slots->element[s + 1]->type != REDIS_REPLY_INTEGER)
        return *err = "CLUSTER SHARDS: slot bounds not integers", false;
      if (!range(out, slots->element[s]->integer, slots->element[s + 1]->integer, owner, err)) return false;
    }
  }
  return true;
}

bool parse_cluster_slots(const redisReply* r, const std::string& asked, SlotMap* out, std::string* err) {
  *out = SlotMap{};
  out->owner.assign(kSlots, -1);
  if (!r || r->type != REDIS_REPLY_ARRAY) return *err = "CLUSTER SLOTS: not an array", false;
  for (size_t i = 0; i < r->elements; ++i) {
    const redisReply* e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
        e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY ||
        e->element[2]->elements < 2 || e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
      return *err = "CLUSTER SLOTS: bad entry", false;
    HostPort m;
    m.host = std::string(sv(e->element[2]->element[0]));
    if (m.host.empty() || m.host == "?") m.host = asked;
    const long long p = e->element[2]->element[1]->integer;
    if (p <= 0 || p > 65535) return *err = "CLUSTER SLOTS: bad master address", false;
    m.port = uint16_t(p);
    if (!range(out, e->element[0]->integer, e->element[1]->integer, out->add(m), err)) return false;
  }
  return true;
}

Redirect parse_redirect(std::string_view e) {
  Redirect r;
  auto starts = [&](std::string_view p) { return e.substr(0, p.size()) == p; };
  if (starts("TRYAGAIN")) return r.kind = Redirect::tryagain, r;
  if (starts("CLUSTERDOWN")) return r.kind = Redirect::clusterdown, r;
  Redirect::Kind k;
  if (starts("MOVED ")) k = Redirect::moved, e.remove_prefix(6);
  else if (starts("ASK ")) k = Redirect::ask, e.remove_prefix(4);
  else return r;
  const size_t sp = e.find(' ');
  if (sp == std::string_view::npos || sp == 0) return r;
  uint32_t slot = 0;
  for (char ch : e.substr(0, sp)) {
    if (ch < '0' || ch > '9') return r;
    slot = slot * 10 + uint32_t(ch - '0');
    if (slot >= kSlots) return r;
  }
  if (!parse_hostport(e.substr(sp + 1), &r.to)) return r;
  r.slot = slot;
  r.kind = k;
  return r;
}

const char* redirect_name(Redirect::Kind k) {
  switch (k) {
    case Redirect::moved: return "MOVED";
    case Redirect::ask: return "ASK";
    case Redirect::tryagain: return "TRYAGAIN";
    case Redirect::clusterdown: return "CLUSTERDOWN";
    default: return "none";
  }
}

}  // namespace nearcache::redis
