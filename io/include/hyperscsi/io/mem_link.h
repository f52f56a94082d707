// MemLink: two in-process Port ends joined by a simulated wire, for tests and
// benchmarks of everything above the Port interface.
//
// Each direction has its own seeded impairment layer (loss, duplication,
// reordering, delay with jitter, bit corruption, a rate limit and a queue
// limit) so that the reliability layer can be exercised reproducibly: the same
// seed and the same sequence of calls give the same outcome. Time comes from
// MemLinkConfig::clock, so a test can drive delays with a virtual clock.
//
// Delivery is FIFO per direction except for frames the reorder impairment
// holds back (jitter delays frames but never reorders them).
// A frame longer than the receiving end's mtu + 14 is dropped and counted
// (emulates an MTU mismatch); frames whose EtherType is not 0x889A are
// filtered as the kernel filter of a real backend would.
//
// fd(): an eventfd that is readable while frames are queued towards this end
// (including frames still delayed: an event loop polling fd() may spin until
// they are due; MemPort::wait_rx sleeps until the first one is due instead).
//
// Ownership: frames handed to tx_burst move onto the link and are handed,
// without copying, to the receiver by rx_burst. Packets may outlive the port.
// Thread-safety: each end is used by one thread at a time, the two ends may
// be used from two different threads (e.g. target and initiator).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "hyperscsi/io/impairment.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/clock.h"

namespace hyperscsi::io {

// Impairment and ImpairmentStats (the per-direction rules and counters) are
// in impairment.h, shared with the hyperscsi-relay tool.

struct MemLinkConfig {
  std::string name = "mem";  // for spec() ("mem:NAME")
  size_t mtu_a = 1500;       // L3 MTU of end A
  size_t mtu_b = 1500;       // L3 MTU of end B
  Impairment a_to_b;
  Impairment b_to_a;
  uint64_t seed = 1;                        // std::mt19937_64 seeds for both directions
  size_t pool_size = 4096;                  // buffers per end
  std::function<proto::TimePoint()> clock;  // empty: std::chrono::steady_clock::now
};

class MemLinkState;

// One end of a MemLink.
class MemPort final : public Port {
 public:
  MemPort(std::shared_ptr<MemLinkState> link, int side);
  ~MemPort() override;
  MemPort(const MemPort&) = delete;
  MemPort& operator=(const MemPort&) = delete;

  std::string_view spec() const override;
  MacAddress mac() const override;
  size_t mtu() const override;
  PortCounters counters() const override;
  int fd() const override;
  Packet alloc() override;
  size_t rx_burst(std::span<Packet> out) override;
  size_t tx_burst(std::span<Packet> pkts) override;
  // Sleeps until the first frame in flight is due (real clock), on the
  // eventfd when nothing is in flight; with a virtual clock it never sleeps
  // for a delayed frame (returns false until the test advances the clock).
  bool wait_rx(std::chrono::microseconds timeout) override;

  // Statistics and settings of the direction this end transmits on.
  ImpairmentStats tx_link_stats() const;
  void set_tx_impairment(const Impairment& imp);

 private:
  std::shared_ptr<MemLinkState> link_;
  int side_;  // 0 = A, 1 = B
};

struct MemLink {
  std::unique_ptr<MemPort> a;
  std::unique_ptr<MemPort> b;
};

// Creates a connected pair. Fails (kBadArgument) on an MTU outside 68..65535.
Result<MemLink, PortError> make_mem_link(const MemLinkConfig& config);

// The "mem:" backend of open_port. `rest` is what follows "mem:", i.e.
// "NAME" or "NAME?key=value,...". Keys: mtu, seed, loss, dup, reorder,
// reorder_gap, reorder_timeout_us, delay_us, jitter_us, corrupt, rate_bps,
// queue (impairments apply to both directions). The first open of NAME
// creates the link and returns end A, the second returns end B; the name is
// free again once both ends are gone.
Result<std::unique_ptr<Port>, PortError> open_mem_port(std::string_view rest,
                                                       const PortOptions& options);

// Names currently registered by open_mem_port (for tests).
size_t mem_registry_size();

}  // namespace hyperscsi::io
