// HyperSCSI through the initiator library: discover and connect on the given
// port, open the LUN, and map block I/O onto Lun::read_into/write_borrowed.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "hyperscsi/initiator/initiator.h"
#include "transport.h"

namespace hyperscsi::bench {
namespace {

class HyperscsiTransport final : public Transport {
 public:
  HyperscsiTransport(std::unique_ptr<initiator::Initiator> ini, initiator::Lun lun,
                     std::string backend)
      : initiator_(std::move(ini)), lun_(lun), backend_(std::move(backend)) {}
  ~HyperscsiTransport() override { initiator_->disconnect(); }

  std::string name() const override { return "hyperscsi"; }
  std::string backend() const override { return backend_; }
  uint64_t size_bytes() const override { return lun_.size_bytes(); }
  uint32_t block_size() const override { return lun_.capacity().block_size; }

  void submit(const IoRequest& r, IoDone done) override {
    const uint32_t bs = block_size();
    const uint64_t lba = r.offset / bs;
    if (r.write) {
      // Borrowed, not copied: the workload leaves a slot's buffer alone until
      // its completion ran, as a library user with its own buffers would.
      lun_.write_borrowed(lba, std::span<const uint8_t>(r.buffer, r.length),
                          [done = std::move(done)](initiator::CommandResult&& res) {
                            done(res.good(), res.good() ? std::string() : res.describe());
                          });
      return;
    }
    // Straight into the workload's buffer (read_into: one copy from the
    // reassembled reply), as a library user with its own buffer reads.
    lun_.read_into(
        lba, r.length / bs, std::span<uint8_t>(r.buffer, r.length),
        [done = std::move(done)](initiator::CommandResult&& res) {
          if (!res.good()) return done(false, res.describe());
          if (res.residual != 0)
            return done(false, "read came back " + std::to_string(res.residual) + " bytes short");
          done(true, {});
        });
  }

  std::optional<FrameCounts> frames() const override {
    const auto s = initiator_->stats();
    return FrameCounts{s.port.tx_frames, s.port.rx_frames, s.foreign_frames};
  }

  std::optional<RecoveryCounts> recovery() const override {
    const auto t = initiator_->stats().transport;
    return RecoveryCounts{t.frames_retransmitted, t.timeouts, t.spurious_timeouts};
  }

  std::vector<PathFigures> paths() const override {
    std::vector<PathFigures> out;
    const auto s = initiator_->stats();
    for (const initiator::PathStats& p : s.paths) {
      PathFigures f;
      f.id = p.id;
      f.state = p.state;
      f.local = io::to_string(p.local_mac);
      f.target = io::to_string(p.target_mac);
      f.frames_sent = p.frames_sent;
      f.frames_received = p.frames_received;
      f.retransmits = p.frames_retransmitted;
      f.failovers = p.failures;
      f.srtt_us = std::chrono::duration<double, std::micro>(p.srtt).count();
      out.push_back(std::move(f));
    }
    return out;
  }

  std::optional<LoopCounts> loop() const override {
    const auto s = initiator_->stats();
    return LoopCounts{static_cast<double>(s.wake.poll_ns) / 1e9, s.wakeups, s.wake.holds};
  }

 private:
  std::unique_ptr<initiator::Initiator> initiator_;
  initiator::Lun lun_;
  std::string backend_;
};

}  // namespace

TransportResult open_hyperscsi(const HyperscsiOptions& options) {
  if (options.port_spec.empty()) return Unexpected(std::string("--port is required for hyperscsi"));
  initiator::Options io;
  io.initiator_name = "hyperscsi-bench";
  io.max_outstanding = std::max(1u, std::min(options.max_outstanding, 512u));
  io.dead_time = std::chrono::seconds(10);
  auto level = proto::parse_protection(options.protection);
  if (!level)
    return Unexpected("--protection must be off, integrity or encrypt, not '" + options.protection +
                      "'");
  io.protection = *level;
  io.checksum = options.checksum;
  io.busy_poll = std::chrono::microseconds(options.busy_poll_us);
  if (!options.secret_file.empty()) {
    auto secret = initiator::read_secret_file(options.secret_file);
    if (!secret) return Unexpected(secret.error().message);
    io.secret = std::move(secret).value();
  } else if (io.protection != proto::Protection::kOff) {
    return Unexpected(std::string("--protection needs --secret-file (keys come from it)"));
  }
  // "A,B" (--port A --port B): one session over both ports (multipath).
  auto ini = initiator::Initiator::open(initiator::split_port_list(options.port_spec), io);
  if (!ini) {
    return Unexpected("cannot open port " + options.port_spec + ": " +
                      std::string(initiator::to_string(ini.error().kind)) + ": " +
                      ini.error().message);
  }
  auto target = (*ini)->connect(options.target);
  if (!target) {
    return Unexpected("cannot connect: " + std::string(initiator::to_string(target.error().kind)) +
                      ": " + target.error().message);
  }
  auto lun = (*ini)->open_lun(options.lun);
  if (!lun) {
    return Unexpected("cannot open LUN " + std::to_string(options.lun) + ": " +
                      std::string(initiator::to_string(lun.error().kind)) + ": " +
                      lun.error().message);
  }
  const auto colon = options.port_spec.find(':');
  std::string backend = options.port_spec.substr(0, colon);
  initiator::Lun opened = *lun;
  return std::unique_ptr<Transport>(
      new HyperscsiTransport(std::move(ini).value(), opened, std::move(backend)));
}

}  // namespace hyperscsi::bench
