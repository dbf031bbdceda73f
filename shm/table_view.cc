// shm/table_view.cc — see table_view.h.
#include "table_view.h"

#include "words.h"

namespace nearcache::shm {

bool TableView::item_of(uint64_t way, uint64_t* off, uint64_t* meta, uint64_t* expiry) const {
  if (way == 0) return false;
  const uint64_t unit = way_unit(way);
  if (unit > (g_.data_bytes - kItemHeaderBytes) / kItemAlign) return false;  // corrupt
  *off = unit * kItemAlign;
  const auto* item = reinterpret_cast<const ItemHeader*>(g_.data + *off);
  *expiry = load_relaxed(&item->expiry_ms);
  *meta = load_relaxed(&item->meta);
  const uint64_t key_off = *off + kItemHeaderBytes;
  const uint64_t klen = meta_key_len(*meta), vlen = meta_value_len(*meta);
  if (vlen > g_.value_limit) return false;
  return g_.data_bytes - key_off >= klen + vlen;  // else it runs past the data area
}

bool TableView::key_at(uint32_t wi, uint64_t now_ms, std::string* key) const {
  const uint32_t idx = wi / 8, w = wi % 8;
  if (idx >= g_.bucket_count || w >= kWaysPerBucket) return false;
  const Bucket* b = &g_.buckets[idx];
  const uint32_t v1 = load_acquire(&b->version);
  if ((v1 & 1) || load_relaxed(&b->epoch) != load_relaxed(&g_.header->epoch)) return false;
  uint64_t off, meta, expiry;
  if (!item_of(load_relaxed(&b->way[w]), &off, &meta, &expiry)) return false;
  if ((expiry != 0 && expiry <= now_ms) || meta_negative(meta)) return false;
  key->resize(meta_key_len(meta));
  copy_from_shared(key->data(), g_.data, off + kItemHeaderBytes, key->size());
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return load_relaxed(&b->version) == v1;
}

bool TableView::read_bucket(uint32_t idx, uint64_t now_ms, BucketEntries* out) const {
  out->entries.clear();
  out->keys.clear();
  if (idx >= g_.bucket_count) return false;
  const Bucket* b = &g_.buckets[idx];
  for (int attempt = 0; attempt <= kMaxRetries; ++attempt) {
    out->entries.clear();
    out->keys.clear();
    const uint32_t v1 = load_acquire(&b->version);
    if (v1 & 1) continue;
    // A bucket of another epoch is empty (a whole-table drop).
    const uint32_t ways = load_relaxed(&b->epoch) == load_relaxed(&g_.header->epoch) ? kWaysPerBucket : 0;
    for (uint32_t i = 0; i < ways; ++i) {
      uint64_t off, meta, expiry;
      if (!item_of(load_relaxed(&b->way[i]), &off, &meta, &expiry)) continue;
      if (expiry != 0 && expiry <= now_ms) continue;
      const uint32_t klen = meta_key_len(meta), vlen = meta_value_len(meta);
      EntryInfo e{uint32_t(out->keys.size()), klen, item_bytes(klen, vlen), vlen, meta_flags(meta),
                  meta_negative(meta)};
      out->keys.resize(out->keys.size() + klen);
      copy_from_shared(out->keys.data() + e.key_off, g_.data, off + kItemHeaderBytes, klen);
      out->entries.push_back(e);
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (load_relaxed(&b->version) == v1) return true;
  }
  out->entries.clear();
  out->keys.clear();
  return false;
}

}  // namespace nearcache::shm
