// MiniTarget: a small in-test responder for the initiator tests until the
// real target engine lands. proto::TargetEndpoint on one Port (a MemLink
// end), executing READ(10/16), WRITE(10/16), READ CAPACITY(10), INQUIRY,
// SYNCHRONIZE CACHE and UNMAP on a RAM vector for LUN 0 (other LUNs get
// CHECK CONDITION, LOGICAL UNIT NOT SUPPORTED). READ CAPACITY(16) is refused
// as an invalid opcode so the initiator's fallback is exercised.
//
// It runs its own thread. restart() destroys and recreates the endpoint (all
// sessions and reply caches are lost, the RAM disk is kept), as a target
// process restart would.
// Thread-safety: the public members may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/target_session.h"

namespace hyperscsi::test {

struct MiniTargetConfig {
  std::string name = "mini";
  uint32_t block_size = 512;
  uint64_t num_blocks = 16384;  // 8 MiB
  uint16_t advertised_mtu = 0;  // 0: the port's MTU
  proto::LoginStatus login_answer = proto::LoginStatus::kOk;
  uint32_t max_transfer = (1u << 20) + 4096;
  uint32_t dead_time_ms = 2000;  // the session's dead-peer time (negotiated)
};

class MiniTarget {
 public:
  MiniTarget(std::unique_ptr<io::Port> port, MiniTargetConfig config);
  ~MiniTarget();

  void restart();  // a new endpoint: sessions lost, data kept
  std::vector<uint8_t> snapshot() const;
  uint64_t commands_executed() const { return executed_.load(); }
  uint64_t writes_executed() const { return writes_.load(); }

 private:
  void run();
  std::unique_ptr<proto::TargetEndpoint> make_endpoint();
  void execute(const proto::IncomingCommand& cmd, proto::TimePoint now);

  std::unique_ptr<io::Port> port_;
  MiniTargetConfig config_;
  mutable std::mutex disk_mutex_;
  std::vector<uint8_t> disk_;
  std::unique_ptr<proto::TargetEndpoint> endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> restart_{false};
  std::atomic<uint64_t> executed_{0};
  std::atomic<uint64_t> writes_{0};
  uint64_t generation_ = 0;
  std::thread thread_;
};

}  // namespace hyperscsi::test
