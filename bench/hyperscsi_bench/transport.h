// Transport: what the workload engine needs from a block target, so that the
// same workload code drives HyperSCSI, iSCSI and a local file or device.
//
// Thread-safety: submit() may be called from any thread, including from
// inside a completion. Completions run on a transport-owned thread and must
// not block. The caller owns the buffer and keeps it alive until the
// completion ran. Destroying a transport waits for its threads; call it only
// when nothing is in flight.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hyperscsi/proto/result.h"
#include "report.h"

namespace hyperscsi::bench {

struct IoRequest {
  bool write = false;
  uint64_t offset = 0;  // bytes, a multiple of block_size()
  uint32_t length = 0;  // bytes, a multiple of block_size()
  uint8_t* buffer = nullptr;
};

// ok false: `error` says what failed (the data path never throws).
using IoDone = std::function<void(bool ok, const std::string& error)>;

struct FrameCounts {
  uint64_t tx = 0;
  uint64_t rx = 0;
  uint64_t foreign = 0;  // received but another session's (several sessions on one host)
};

// The client's own loss-recovery events, when the transport keeps them
// (HyperSCSI's connection counters; TCP's are the kernel's and not per run).
struct RecoveryCounts {
  uint64_t retransmits = 0;  // frames sent again, for any reason
  uint64_t timeouts = 0;     // retransmission timer expiries
  uint64_t spurious = 0;     // of those, shown spurious and undone
};

// How the client's I/O thread waited, cumulative; transports with such a
// thread report it (HyperSCSI's initiator).
struct LoopCounts {
  double poll_seconds = 0;  // busy polling
  uint64_t wakeups = 0;     // voluntary context switches of the thread
  uint64_t holds = 0;       // sleeps without watching the port
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string name() const = 0;     // "hyperscsi", "iscsi", "local"
  virtual std::string backend() const = 0;  // packet backend, "libiscsi", "pread"...
  virtual uint64_t size_bytes() const = 0;
  virtual uint32_t block_size() const = 0;
  virtual void submit(const IoRequest& request, IoDone done) = 0;
  // Frames sent/received by the transport itself, when it can tell (port
  // counters); empty otherwise (then --iface counters are used).
  virtual std::optional<FrameCounts> frames() const { return std::nullopt; }
  // Cumulative recovery events of the client side; empty when unknown.
  virtual std::optional<RecoveryCounts> recovery() const { return std::nullopt; }
  // Cumulative wait counters of the client's I/O thread; empty when unknown.
  virtual std::optional<LoopCounts> loop() const { return std::nullopt; }
  // A multipath session's paths, counters cumulative (PathFigures); empty
  // for a single-path session and transports without paths.
  virtual std::vector<PathFigures> paths() const { return {}; }
};

using TransportResult = Result<std::unique_ptr<Transport>, std::string>;

struct LocalOptions {
  std::string path;
  bool direct = false;   // O_DIRECT
  unsigned threads = 1;  // I/O threads (the queue depth, capped)
};
TransportResult open_local(const LocalOptions& options);

struct HyperscsiOptions {
  std::string port_spec;  // "afpacket:eth1"...
  std::string target;     // empty: the only target that answers
  uint16_t lun = 0;
  uint32_t max_outstanding = 256;
  std::string secret_file;  // empty: unauthenticated
  std::string protection = "off";
  bool checksum = true;        // offer CHECKSUM at login
  unsigned busy_poll_us = 50;  // as initiator::Options::busy_poll
};
TransportResult open_hyperscsi(const HyperscsiOptions& options);

struct IscsiOptions {
  std::string url;  // iscsi://host[:port]/iqn/lun
  std::string initiator_name = "iqn.2026-01.org.hyperscsi:bench";
};
TransportResult open_iscsi(const IscsiOptions& options);

}  // namespace hyperscsi::bench
