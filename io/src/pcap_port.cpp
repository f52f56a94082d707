#include "hyperscsi/io/pcap_port.h"

#include <pcap/pcap.h>

#include <cstring>
#include <string>

#include "ether.h"
#include "hyperscsi/io/heap_pool.h"
#include "hyperscsi/io/rx_filter.h"
#include "netif.h"

namespace hyperscsi::io {
namespace {

PortError pcap_error(std::string_view who, int rc, const char* detail) {
  PortErrorKind kind = PortErrorKind::kBackendFailure;
  switch (rc) {
    case PCAP_ERROR_NO_SUCH_DEVICE:
      kind = PortErrorKind::kNoSuchInterface;
      break;
    case PCAP_ERROR_PERM_DENIED:
    case PCAP_ERROR_PROMISC_PERM_DENIED:
      kind = PortErrorKind::kPermission;
      break;
    case PCAP_ERROR_IFACE_NOT_UP:
      kind = PortErrorKind::kInterfaceDown;
      break;
    default:
      break;
  }
  std::string msg(who);
  msg += ": ";
  msg += (detail != nullptr && *detail != '\0') ? detail : pcap_statustostr(rc);
  if (kind == PortErrorKind::kPermission) msg += " (needs root or CAP_NET_RAW)";
  return {kind, std::move(msg)};
}

class PcapPort final : public Port {
 public:
  PcapPort(std::string spec, detail::InterfaceInfo info, const PortOptions& opt)
      : spec_(std::move(spec)),
        info_(std::move(info)),
        vid_(opt.vlan_id),
        pcp_(opt.vlan_priority),
        pool_(opt.pool_size, info_.mtu) {}
  ~PcapPort() override {
    if (pcap_ != nullptr) pcap_close(pcap_);
  }
  PcapPort(const PcapPort&) = delete;
  PcapPort& operator=(const PcapPort&) = delete;

  Status<PortError> open(const PortOptions& opt);

  std::string_view spec() const override { return spec_; }
  MacAddress mac() const override { return info_.mac; }
  size_t mtu() const override { return info_.mtu; }
  PortCounters counters() const override {
    PortCounters c = counters_;
    pcap_stat st{};
    if (pcap_stats(pcap_, &st) == 0) c.rx_dropped += st.ps_drop;  // cumulative in pcap
    return c;
  }
  int fd() const override { return fd_; }
  Packet alloc() override { return pool_.alloc(); }
  size_t rx_burst(std::span<Packet> out) override;
  size_t tx_burst(std::span<Packet> pkts) override;
  TxBlock tx_blocked() const override { return tx_blocked_; }
  Status<PortError> set_rx_filter(const RxFilter& filter) override;

 private:
  struct Batch {
    PcapPort* self;
    std::span<Packet> out;
    size_t n;
  };
  static void on_frame(u_char* user, const pcap_pkthdr* h, const u_char* bytes);

  std::string spec_;
  detail::InterfaceInfo info_;
  uint16_t vid_;
  uint8_t pcp_;
  HeapPacketPool pool_;
  pcap_t* pcap_ = nullptr;
  int fd_ = -1;
  PortCounters counters_;
  TxBlock tx_blocked_ = TxBlock::kQueueFull;
};

Status<PortError> PcapPort::open(const PortOptions& opt) {
  const std::string who = spec_;
  char err[PCAP_ERRBUF_SIZE] = {};
  pcap_ = pcap_create(info_.name.c_str(), err);
  if (pcap_ == nullptr) return Unexpected(pcap_error(who, PCAP_ERROR, err));
  pcap_set_snaplen(pcap_, static_cast<int>(info_.mtu + 18));
  pcap_set_promisc(pcap_, 0);
  pcap_set_immediate_mode(pcap_, 1);
  pcap_set_buffer_size(pcap_, static_cast<int>(opt.ring_bytes));
  const int rc = pcap_activate(pcap_);
  if (rc < 0) return Unexpected(pcap_error(who, rc, pcap_geterr(pcap_)));
  if (pcap_setnonblock(pcap_, 1, err) < 0) return Unexpected(pcap_error(who, PCAP_ERROR, err));
  if (pcap_setdirection(pcap_, PCAP_D_IN) < 0)
    return Unexpected(pcap_error(who + " (setdirection)", PCAP_ERROR, pcap_geterr(pcap_)));
  const std::string expr =
      vid_ == 0 ? "ether proto 0x889a" : "vlan " + std::to_string(vid_) + " and ether proto 0x889a";
  bpf_program prog{};
  if (pcap_compile(pcap_, &prog, expr.c_str(), 1, PCAP_NETMASK_UNKNOWN) < 0)
    return Unexpected(pcap_error(who + " (filter '" + expr + "')", PCAP_ERROR, pcap_geterr(pcap_)));
  const int frc = pcap_setfilter(pcap_, &prog);
  pcap_freecode(&prog);
  if (frc < 0) return Unexpected(pcap_error(who + " (setfilter)", PCAP_ERROR, pcap_geterr(pcap_)));
  fd_ = pcap_get_selectable_fd(pcap_);
  return {};
}

Status<PortError> PcapPort::set_rx_filter(const RxFilter& filter) {
  const std::vector<BpfInstruction> program = rx_filter_program(filter, vid_, BpfFlavor::kPcap);
  std::vector<bpf_insn> code;
  code.reserve(program.size());
  for (const BpfInstruction& in : program) code.push_back({in.code, in.jt, in.jf, in.k});
  bpf_program prog{static_cast<u_int>(code.size()), code.data()};
  if (pcap_setfilter(pcap_, &prog) < 0)
    return Unexpected(pcap_error(spec_ + " (setfilter " + to_string(filter) + ")", PCAP_ERROR,
                                 pcap_geterr(pcap_)));
  return {};
}

void PcapPort::on_frame(u_char* user, const pcap_pkthdr* h, const u_char* bytes) {
  auto* b = reinterpret_cast<Batch*>(user);
  PcapPort& self = *b->self;
  size_t len = h->caplen;
  if (h->caplen < h->len || len < detail::kEthHeader) {
    ++self.counters_.rx_errors;  // truncated
    return;
  }
  const bool tagged = detail::load_be16(bytes + 12) == detail::kEtherTypeVlan;
  if (tagged != (self.vid_ != 0)) return;
  if (tagged) {
    if (len < detail::kEthHeader + detail::kVlanTag ||
        (detail::load_be16(bytes + 14) & 0x0fff) != self.vid_ ||
        detail::load_be16(bytes + 16) != detail::kEtherTypeHyperScsi)
      return;
  } else if (detail::load_be16(bytes + 12) != detail::kEtherTypeHyperScsi) {
    return;
  }
  Packet p = self.pool_.alloc();
  if (!p || !p.resize(len)) {
    ++self.counters_.rx_dropped;
    return;
  }
  std::memcpy(p.data(), bytes, len);
  if (tagged) detail::strip_vlan(p);
  ++self.counters_.rx_frames;
  self.counters_.rx_bytes += p.size();
  b->out[b->n++] = std::move(p);
}

size_t PcapPort::rx_burst(std::span<Packet> out) {
  if (out.empty()) return 0;
  Batch b{this, out, 0};
  // The callback fills at most out.size() frames: pcap_dispatch stops at cnt.
  const int rc = pcap_dispatch(pcap_, static_cast<int>(out.size()), &PcapPort::on_frame,
                               reinterpret_cast<u_char*>(&b));
  if (rc < 0) ++counters_.rx_errors;
  return b.n;
}

size_t PcapPort::tx_burst(std::span<Packet> pkts) {
  const size_t max_frame = info_.mtu + detail::kEthHeader;
  size_t n = 0;
  for (; n < pkts.size(); ++n) {
    Packet& p = pkts[n];
    if (!p || p.size() < detail::kEthHeader || p.size() > max_frame ||
        (vid_ != 0 && !detail::insert_vlan(p, vid_, pcp_))) {
      ++counters_.tx_errors;
      p.reset();
      continue;
    }
    if (pcap_inject(pcap_, p.data(), p.size()) < 0) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EINTR) {
        if (vid_ != 0) detail::strip_vlan(p);
        ++counters_.tx_dropped;
        const bool socket = err == EAGAIN || err == EWOULDBLOCK;
        tx_blocked_ = socket ? TxBlock::kSocketFull : TxBlock::kQueueFull;
        ++(socket ? counters_.tx_blocked_socket : counters_.tx_blocked_queue);
        break;  // the caller keeps pkts[n..]
      }
      ++counters_.tx_errors;
      p.reset();
      continue;
    }
    ++counters_.tx_frames;
    counters_.tx_bytes += p.size();
    p.reset();
  }
  return n;
}

}  // namespace

Result<std::unique_ptr<Port>, PortError> open_pcap_port(std::string_view iface,
                                                        const PortOptions& options) {
  // Checked here first so the errors are typed the same way as afpacket's.
  auto info = detail::require_up_interface("pcap", iface);
  if (!info) return Unexpected(info.error());
  if (options.vlan_id > 4094 || options.vlan_priority > 7)
    return Unexpected(PortError{PortErrorKind::kBadArgument,
                                "pcap: vlan_id must be 0..4094 and vlan_priority 0..7"});
  if (options.pool_size == 0)
    return Unexpected(PortError{PortErrorKind::kBadArgument, "pcap: pool_size must be > 0"});
  auto port = std::make_unique<PcapPort>("pcap:" + std::string(iface), std::move(*info), options);
  auto st = port->open(options);
  if (!st) return Unexpected(st.error());
  std::unique_ptr<Port> out = std::move(port);
  return out;
}

}  // namespace hyperscsi::io
