// daemon/engine/locks.cc — see locks.h.
#include "engine/locks.h"

#include <algorithm>

namespace nearcache::daemon {

void Locks::purge(uint64_t now) {
  while (!by_expiry_.empty() && by_expiry_.begin()->first <= now) {
    locks_.erase(by_expiry_.begin()->second);
    by_expiry_.erase(by_expiry_.begin());
  }
}

void Locks::set_expiry(const std::string& key, Held& h, uint64_t expiry) {
  by_expiry_.erase({h.expiry, key});
  h.expiry = expiry;
  by_expiry_.emplace(expiry, key);
}

bool Locks::acquire(std::string_view key, std::string_view token, uint64_t expiry, uint64_t now) {
  purge(now);
  auto [it, fresh] = locks_.try_emplace(std::string(key), Held{std::string(token), expiry});
  if (!fresh) return false;
  by_expiry_.emplace(expiry, it->first);
  return true;
}

bool Locks::release(std::string_view key, std::string_view token, uint64_t now) {
  purge(now);
  auto it = locks_.find(std::string(key));
  if (it == locks_.end() || it->second.token != token) return false;
  by_expiry_.erase({it->second.expiry, it->first});
  locks_.erase(it);
  return true;
}

bool Locks::extend(std::string_view key, std::string_view token, uint64_t ms, bool replace, uint64_t ceiling,
                   uint64_t now) {
  purge(now);
  auto it = locks_.find(std::string(key));
  if (it == locks_.end() || it->second.token != token) return false;
  const uint64_t from = replace ? now : it->second.expiry;
  set_expiry(it->first, it->second, std::min(ceiling, from + std::min(ms, ceiling)));
  return true;
}

bool Locks::query(std::string_view key, uint64_t now, std::string* token, uint64_t* expiry) {
  purge(now);
  auto it = locks_.find(std::string(key));
  if (it == locks_.end()) return false;
  *token = it->second.token;
  *expiry = it->second.expiry;
  return true;
}

size_t Locks::held(uint64_t now) {
  purge(now);
  return locks_.size();
}

}  // namespace nearcache::daemon
