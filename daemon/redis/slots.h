// daemon/redis/slots.h — Redis Cluster's key slots (CRC16-XMODEM of the key,
// or of its {hash tag}, mod 16384) and the per-slot write counters the repair
// after a missed-invalidation gap compares (repair.h).
//
// Every write of this cache's write path bumps the counter of its key's slot
// in the same MULTI/EXEC or script as the write. A counter's key holds a hash
// tag chosen so that the counter lands in the slot it counts: a write and its
// bump always touch one slot (what Redis Cluster requires of a transaction).
// Counter keys start with a NUL byte, so they are outside every value prefix
// (validate() refuses a prefix with NUL) and never tracked or cleared.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nearcache::redis {

inline constexpr uint32_t kSlots = 16384;

// CRC16-XMODEM (poly 0x1021, init 0), as Redis Cluster uses.
uint16_t crc16(std::string_view s);
// The slot of a Redis key: CRC16 of the text between the first '{' and the
// next '}' when that is not empty, else of the whole key; mod 16384.
uint32_t key_slot(std::string_view redis_key);

// A short tag (digits and lowercase letters) per slot whose CRC16 puts it in
// that slot; computed once (about 60k CRCs) on first use.
const std::vector<std::string>& slot_tags();

// "\0ncslot{<tag>}" + prefix: the counter of `slot` for this cache's prefix.
std::string slot_counter_key(std::string_view prefix, uint32_t slot);
// The counter every CLEAR step bumps (a CLEAR removes keys of any slot).
// home_slot >= 0 (Redis Cluster, one per master): "\0ncclear{<tag>}" + prefix
// with the tag of that slot, so that the key lives on the master it counts.
std::string clear_counter_key(std::string_view prefix, int home_slot = -1);
// The marker holding this database's random epoch: a flush message whose
// marker is intact was a FLUSHDB of another database. home_slot as above.
std::string flush_marker_key(std::string_view prefix, int home_slot = -1);
// "\0nclease{<tag>}" + redis_key with the tag of the Redis key's slot: the
// lease of a key in the key's slot (the lease script touches both; Redis
// Cluster refuses keys of two slots with CROSSSLOT).
std::string tagged_lease_key(std::string_view redis_key);
// "\0nclock{<tag>}" + redis_key: a lock's key on a cluster, in the slot of its name.
std::string tagged_lock_key(std::string_view redis_key);

}  // namespace nearcache::redis
