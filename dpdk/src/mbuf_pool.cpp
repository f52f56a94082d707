#include "mbuf_pool.h"

#include <rte_errno.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <algorithm>
#include <mutex>

namespace hyperscsi::dpdk {
namespace {

// Set while tx_burst hands Packets' mbufs to the PMD: release() then only
// drops the Packet's reference and leaves the mbuf to the PMD.
thread_local bool t_detaching = false;

struct PoolRegistry {
  std::mutex mutex;
  std::vector<MbufPool*> pools;
};
PoolRegistry& pool_registry() {
  static PoolRegistry* r = new PoolRegistry;  // never destroyed: pools may outlive statics
  return *r;
}

void collect_range(rte_mempool*, void* opaque, rte_mempool_memhdr* hdr, unsigned) {
  auto* ranges = static_cast<std::vector<std::pair<uintptr_t, uintptr_t>>*>(opaque);
  const auto begin = reinterpret_cast<uintptr_t>(hdr->addr);
  ranges->emplace_back(begin, begin + hdr->len);
}

}  // namespace

MbufPool* MbufPool::create(std::shared_ptr<EalRuntime> eal, const std::string& name, size_t count,
                           size_t data_room, int socket_id, std::string* error) {
  if (data_room > UINT16_MAX) {
    *error = "mbuf data room " + std::to_string(data_room) + " exceeds 65535";
    return nullptr;
  }
  // Per-lcore cache: at most 512 and well under the pool size.
  const unsigned cache = static_cast<unsigned>(std::min<size_t>(256, count / 4));
  rte_mempool* mp = rte_pktmbuf_pool_create(name.c_str(), static_cast<unsigned>(count), cache, 0,
                                            static_cast<uint16_t>(data_room), socket_id);
  if (mp == nullptr) {
    *error = "rte_pktmbuf_pool_create(" + std::to_string(count) + " x " +
             std::to_string(data_room) + " bytes) failed: " + rte_strerror(rte_errno);
    return nullptr;
  }
  auto* pool = new MbufPool(std::move(eal), mp);
  std::lock_guard lock(pool_registry().mutex);
  pool_registry().pools.push_back(pool);
  return pool;
}

MbufPool::MbufPool(std::shared_ptr<EalRuntime> eal, rte_mempool* mp)
    : eal_(std::move(eal)), mp_(mp) {
  rte_mempool_mem_iter(mp_, collect_range, &ranges_);
}

MbufPool::~MbufPool() {
  {
    std::lock_guard lock(pool_registry().mutex);
    auto& pools = pool_registry().pools;
    pools.erase(std::remove(pools.begin(), pools.end(), this), pools.end());
  }
  rte_mempool_free(mp_);
}

void MbufPool::unref() noexcept {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

io::Packet MbufPool::wrap(rte_mbuf* m) {
  refs_.fetch_add(1, std::memory_order_relaxed);
  io::Packet p(this, m, static_cast<uint8_t*>(m->buf_addr), m->buf_len, m->data_off);
  p.resize(m->data_len);
  return p;
}

io::Packet MbufPool::alloc() {
  rte_mbuf* m = rte_pktmbuf_alloc(mp_);
  if (m == nullptr) return {};
  return wrap(m);
}

void MbufPool::release(void* cookie, uint8_t*) noexcept {
  if (!t_detaching) rte_pktmbuf_free(static_cast<rte_mbuf*>(cookie));
  unref();
}

void MbufPool::detach(io::Packet& pkt) noexcept {
  t_detaching = true;
  pkt.reset();
  t_detaching = false;
}

bool MbufPool::owns(const void* p) const {
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (const auto& [begin, end] : ranges_)
    if (a >= begin && a < end) return true;
  return false;
}

MbufPool* MbufPool::find_owner(const void* p) {
  std::lock_guard lock(pool_registry().mutex);
  for (MbufPool* pool : pool_registry().pools)
    if (pool->owns(p)) return pool;
  return nullptr;
}

}  // namespace hyperscsi::dpdk
