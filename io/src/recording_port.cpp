// RecordingPort: a Port decorator that writes every frame to a pcap file.
#include <pcap/pcap.h>
#include <sys/time.h>

#include <cstring>
#include <string>
#include <vector>

#include "hyperscsi/io/pcap_port.h"

namespace hyperscsi::io {
namespace {

class RecordingPort final : public Port {
 public:
  RecordingPort(std::unique_ptr<Port> inner, pcap_t* dead, pcap_dumper_t* dumper)
      : inner_(std::move(inner)), dead_(dead), dumper_(dumper) {}
  ~RecordingPort() override {
    pcap_dump_flush(dumper_);
    pcap_dump_close(dumper_);
    pcap_close(dead_);
  }
  RecordingPort(const RecordingPort&) = delete;
  RecordingPort& operator=(const RecordingPort&) = delete;

  std::string_view spec() const override { return inner_->spec(); }
  MacAddress mac() const override { return inner_->mac(); }
  size_t mtu() const override { return inner_->mtu(); }
  PortCounters counters() const override { return inner_->counters(); }
  int fd() const override { return inner_->fd(); }
  bool wait_rx(std::chrono::microseconds timeout) override { return inner_->wait_rx(timeout); }
  TxBlock tx_blocked() const override { return inner_->tx_blocked(); }
  uint64_t tx_rate() const override { return inner_->tx_rate(); }
  uint64_t tx_bucket() const override { return inner_->tx_bucket(); }
  Packet alloc() override { return inner_->alloc(); }
  Status<PortError> set_rx_filter(const RxFilter& filter) override {
    return inner_->set_rx_filter(filter);
  }
  Status<PortError> set_rx_paused(bool paused) override { return inner_->set_rx_paused(paused); }

  size_t rx_burst(std::span<Packet> out) override {
    const size_t n = inner_->rx_burst(out);
    for (size_t i = 0; i < n; ++i) dump(out[i].data(), out[i].size());
    return n;
  }

  size_t tx_burst(std::span<Packet> pkts) override {
    // The inner port empties the handles it takes: snapshot first, then
    // record only the frames it accepted.
    staged_.clear();
    offsets_.clear();
    for (const Packet& p : pkts) {
      offsets_.push_back(staged_.size());
      if (p) staged_.insert(staged_.end(), p.data(), p.data() + p.size());
    }
    offsets_.push_back(staged_.size());
    const size_t n = inner_->tx_burst(pkts);
    for (size_t i = 0; i < n; ++i)
      if (offsets_[i + 1] > offsets_[i])
        dump(staged_.data() + offsets_[i], offsets_[i + 1] - offsets_[i]);
    return n;
  }

 private:
  void dump(const uint8_t* data, size_t len) {
    pcap_pkthdr h{};
    ::gettimeofday(&h.ts, nullptr);
    h.caplen = h.len = static_cast<bpf_u_int32>(len);
    pcap_dump(reinterpret_cast<u_char*>(dumper_), &h, data);
  }

  std::unique_ptr<Port> inner_;
  pcap_t* dead_;
  pcap_dumper_t* dumper_;
  std::vector<uint8_t> staged_;
  std::vector<size_t> offsets_;
};

}  // namespace

Result<std::unique_ptr<Port>, PortError> make_recording_port(std::unique_ptr<Port> inner,
                                                             const std::string& path) {
  pcap_t* dead = pcap_open_dead(DLT_EN10MB, 65535);
  if (dead == nullptr)
    return Unexpected(PortError{PortErrorKind::kBackendFailure, "pcap_open_dead failed"});
  pcap_dumper_t* dumper = pcap_dump_open(dead, path.c_str());
  if (dumper == nullptr) {
    PortError e{PortErrorKind::kBadArgument,
                "record_pcap: cannot create '" + path + "': " + pcap_geterr(dead)};
    pcap_close(dead);
    return Unexpected(std::move(e));
  }
  std::unique_ptr<Port> out = std::make_unique<RecordingPort>(std::move(inner), dead, dumper);
  return out;
}

}  // namespace hyperscsi::io
