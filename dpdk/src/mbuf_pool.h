// MbufPool: an io::PacketPool over a DPDK mempool. Packets it hands out are
// mbufs (cookie = rte_mbuf*, buffer = the mbuf's data buffer), so frames move
// between the engines and the PMD without copying.
//
// Lifetime: reference counted by hand because Packets hold a raw PacketPool*:
// one reference for the owning port plus one per Packet alive. The mempool is
// freed (and the EAL reference dropped) when the port has let go and the last
// Packet came back. Thread-safety: release() and the counts are atomic.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "eal_runtime.h"
#include "hyperscsi/io/packet.h"

struct rte_mbuf;
struct rte_mempool;

namespace hyperscsi::dpdk {

class MbufPool final : public io::PacketPool {
 public:
  // Creates the mempool; nullptr result with `error` set on failure.
  static MbufPool* create(std::shared_ptr<EalRuntime> eal, const std::string& name, size_t count,
                          size_t data_room, int socket_id, std::string* error);

  io::Packet alloc() override;
  void release(void* cookie, uint8_t* buffer) noexcept override;

  // Wraps an mbuf (from any of our pools) into a Packet of this pool.
  io::Packet wrap(rte_mbuf* m);

  // Ends a Packet's ownership of its mbuf without freeing it (the PMD took
  // it). Works for Packets of any MbufPool; only on the calling thread.
  static void detach(io::Packet& pkt) noexcept;

  // True if `p` points into the memory of this pool (so a cookie is our mbuf).
  bool owns(const void* p) const;
  // The MbufPool (any, in this process) whose memory holds `p`, or nullptr.
  static MbufPool* find_owner(const void* p);

  rte_mempool* mempool() const { return mp_; }

  // Drops the owning port's reference.
  void drop_owner() noexcept { unref(); }

 private:
  MbufPool(std::shared_ptr<EalRuntime> eal, rte_mempool* mp);
  ~MbufPool() override;
  void unref() noexcept;

  std::shared_ptr<EalRuntime> eal_;  // the EAL outlives the mempool
  rte_mempool* mp_;
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges_;  // [begin, end) of the pool's memory
  std::atomic<size_t> refs_{1};
};

}  // namespace hyperscsi::dpdk
