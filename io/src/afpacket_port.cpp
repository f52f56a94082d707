#include "hyperscsi/io/afpacket_port.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "ether.h"
#include "hyperscsi/io/heap_pool.h"
#include "hyperscsi/io/rx_filter.h"
#include "netif.h"
#include "shaper.h"

namespace hyperscsi::io {
namespace {

constexpr size_t kMinBlock = 1u << 16;  // a power of two, hence a multiple of the page size
constexpr int kSocketBuffer = 8 << 20;  // room for several jumbo bursts
// Where a paused socket is bound: IEEE 802's "local experimental" EtherType 1.
// The kernel then visits it only for frames of that type (which the filter
// rejects), not for every frame on the interface as with ETH_P_ALL.
constexpr uint16_t kParkedEtherType = 0x88B5;

// Attaches rx_filter_program(filter) to `fd`, replacing any earlier program.
int attach_filter(int fd, const RxFilter& filter, uint16_t vid) {
  const std::vector<BpfInstruction> program = rx_filter_program(filter, vid, BpfFlavor::kAfPacket);
  std::vector<sock_filter> code;
  code.reserve(program.size());
  for (const BpfInstruction& in : program) code.push_back({in.code, in.jt, in.jf, in.k});
  sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
  return ::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
}

size_t round_up_pow2(size_t v) {
  size_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

class AfPacketPort final : public Port {
 public:
  AfPacketPort(std::string spec, detail::InterfaceInfo info, const PortOptions& opt)
      : spec_(std::move(spec)),
        info_(std::move(info)),
        vid_(opt.vlan_id),
        pcp_(opt.vlan_priority),
        pool_(opt.pool_size, info_.mtu) {}

  ~AfPacketPort() override {
    if (ring_ != nullptr) ::munmap(ring_, ring_size_);
    if (fd_ >= 0) ::close(fd_);
  }
  AfPacketPort(const AfPacketPort&) = delete;
  AfPacketPort& operator=(const AfPacketPort&) = delete;

  Status<PortError> open(const PortOptions& opt);

  std::string_view spec() const override { return spec_; }
  MacAddress mac() const override { return info_.mac; }
  size_t mtu() const override { return info_.mtu; }
  PortCounters counters() const override {
    tpacket_stats st{};
    socklen_t len = sizeof st;
    // The kernel resets these on read: accumulate.
    if (::getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0)
      counters_.rx_dropped += st.tp_drops;
    return counters_;
  }
  int fd() const override { return fd_; }
  Packet alloc() override { return pool_.alloc(); }
  size_t rx_burst(std::span<Packet> out) override;
  size_t tx_burst(std::span<Packet> pkts) override;
  bool tx_gather() const override { return true; }
  TxBlock tx_blocked() const override { return tx_blocked_; }
  uint64_t tx_rate() const override { return shaper_ ? shaper_->current().rate : 0; }
  uint64_t tx_bucket() const override { return shaper_ ? shaper_->current().bucket : 0; }
  Status<PortError> set_rx_filter(const RxFilter& filter) override {
    if (attach_filter(fd_, filter, vid_) < 0)
      return Unexpected(
          detail::errno_error(spec_ + ": SO_ATTACH_FILTER (" + to_string(filter) + ")", errno));
    return {};
  }
  Status<PortError> set_rx_paused(bool paused) override {
    // The kernel refuses to rebind a socket in a fanout group (EINVAL).
    if (fanout_ && paused)
      return Unexpected(PortError{PortErrorKind::kUnavailable,
                                  spec_ + ": a port in a fanout group cannot pause receiving"});
    if (bind_to(paused ? kParkedEtherType : ETH_P_ALL) < 0)
      return Unexpected(
          detail::errno_error(spec_ + (paused ? ": pause (bind)" : ": resume (bind)"), errno));
    return {};
  }

 private:
  // Slot i of the ring: slots never straddle a block, and blocks are contiguous in the mapping.
  tpacket2_hdr* slot(size_t i) {
    const size_t per_block = block_size_ / frame_size_;
    return reinterpret_cast<tpacket2_hdr*>(ring_ + (i / per_block) * block_size_ +
                                           (i % per_block) * frame_size_);
  }
  int bind_to(uint16_t ether_type) {
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ether_type);
    sll.sll_ifindex = info_.index;
    return ::bind(fd_, reinterpret_cast<sockaddr*>(&sll), sizeof sll);
  }
  // Copies one ring frame into a Packet; false if it is to be skipped.
  bool take_frame(const tpacket2_hdr* hdr, Packet& out);

  std::string spec_;
  detail::InterfaceInfo info_;
  uint16_t vid_;
  uint8_t pcp_;
  HeapPacketPool pool_;
  int fd_ = -1;
  uint8_t* ring_ = nullptr;
  size_t ring_size_ = 0;
  size_t block_size_ = 0;
  size_t frame_size_ = 0;
  size_t frame_count_ = 0;
  size_t cur_frame_ = 0;   // next slot to look at: the kernel fills slots in order
  uint32_t empty_rx_ = 0;  // rx_burst calls in a row that found nothing
  TxBlock tx_blocked_ = TxBlock::kNone;
  std::unique_ptr<detail::ShaperWatch> shaper_;  // the root tbf, kept current
  bool fanout_ = false;  // joined a PACKET_FANOUT group (then never rebound)
  mutable PortCounters counters_;
  std::vector<mmsghdr> msgs_;
  std::vector<iovec> iovs_;
};

Status<PortError> AfPacketPort::open(const PortOptions& opt) {
  const std::string who = "afpacket:" + info_.name;
  // Protocol 0: receive nothing until the filter and ring are in place and
  // bind() selects ETH_P_ALL.
  fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return Unexpected(detail::errno_error(who + ": socket(AF_PACKET)", errno));

  if (attach_filter(fd_, RxFilter::all(), vid_) < 0)
    return Unexpected(detail::errno_error(who + ": SO_ATTACH_FILTER", errno));
  int one = 1;
  // Best effort (Linux >= 4.20); the filter and rx_burst drop outgoing frames anyway.
  (void)::setsockopt(fd_, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
  int sz = kSocketBuffer;
  if (::setsockopt(fd_, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) < 0)
    (void)::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  if (::setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
    (void)::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  // A shaper on the interface sets the pace (see shaper.h), also one
  // installed or changed later: tx_burst polls the watch.
  shaper_ = std::make_unique<detail::ShaperWatch>(info_.index);
  if (opt.qdisc_bypass && ::setsockopt(fd_, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) < 0)
    return Unexpected(detail::errno_error(who + ": PACKET_QDISC_BYPASS", errno));

  // TPACKET_V2, not V3: a V3 block is handed over (and poll() woken) only
  // when it is full or its retire timer fires, which added ~1 ms to every
  // frame at low rates. V2 hands over, and wakes the reader, per frame.
  int version = TPACKET_V2;
  if (::setsockopt(fd_, SOL_PACKET, PACKET_VERSION, &version, sizeof version) < 0)
    return Unexpected(detail::errno_error(who + ": PACKET_VERSION TPACKET_V2", errno));
  // A slot holds the header, sockaddr_ll, the kernel's alignment padding
  // before the MAC header, and a full frame with a VLAN tag (mtu + 14 + 4).
  const size_t frame_max = TPACKET_ALIGN(TPACKET2_HDRLEN) + info_.mtu + 18 + 64;
  frame_size_ = TPACKET_ALIGN(frame_max);
  block_size_ = std::max(kMinBlock, round_up_pow2(4 * frame_max));
  if (opt.ring_bytes < 2 * block_size_)
    return Unexpected(
        PortError{PortErrorKind::kBadArgument, who + ": ring_bytes must be at least " +
                                                   std::to_string(2 * block_size_) + " at MTU " +
                                                   std::to_string(info_.mtu)});
  const size_t block_count = opt.ring_bytes / block_size_;
  frame_count_ = (block_size_ / frame_size_) * block_count;
  tpacket_req req{};
  req.tp_block_size = static_cast<unsigned>(block_size_);
  req.tp_block_nr = static_cast<unsigned>(block_count);
  req.tp_frame_size = static_cast<unsigned>(frame_size_);
  req.tp_frame_nr = static_cast<unsigned>(frame_count_);
  if (::setsockopt(fd_, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0)
    return Unexpected(detail::errno_error(who + ": PACKET_RX_RING", errno));
  ring_size_ = block_size_ * block_count;
  void* m = ::mmap(nullptr, ring_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (m == MAP_FAILED) return Unexpected(detail::errno_error(who + ": mmap ring", errno));
  ring_ = static_cast<uint8_t*>(m);

  if (bind_to(ETH_P_ALL) < 0) return Unexpected(detail::errno_error(who + ": bind", errno));
  if (opt.fanout_group >= 0) {
    if (opt.fanout_group > 0xffff)
      return Unexpected(
          PortError{PortErrorKind::kBadArgument, who + ": fanout_group must be within 0..65535"});
    int arg = opt.fanout_group | (PACKET_FANOUT_HASH << 16);
    if (::setsockopt(fd_, SOL_PACKET, PACKET_FANOUT, &arg, sizeof arg) < 0)
      return Unexpected(detail::errno_error(
          who + ": PACKET_FANOUT group " + std::to_string(opt.fanout_group), errno));
    fanout_ = true;
  }
  return {};
}

bool AfPacketPort::take_frame(const tpacket2_hdr* hdr, Packet& out) {
  const auto* sll = reinterpret_cast<const sockaddr_ll*>(reinterpret_cast<const uint8_t*>(hdr) +
                                                         TPACKET_ALIGN(sizeof(tpacket2_hdr)));
  if (sll->sll_pkttype == PACKET_OUTGOING) return false;
  if (hdr->tp_snaplen < hdr->tp_len || hdr->tp_snaplen < detail::kEthHeader ||
      size_t{hdr->tp_mac} + hdr->tp_snaplen > frame_size_) {
    ++counters_.rx_errors;  // truncated by the ring
    return false;
  }
  const uint8_t* data = reinterpret_cast<const uint8_t*>(hdr) + hdr->tp_mac;
  size_t len = hdr->tp_snaplen;
  const bool aux_tag = (hdr->tp_status & TP_STATUS_VLAN_VALID) != 0;
  bool inband_tag = false;
  if (aux_tag) {
    if (vid_ == 0 || (hdr->tp_vlan_tci & 0x0fff) != vid_) return false;
  } else if (vid_ != 0) {
    if (len < detail::kEthHeader + detail::kVlanTag ||
        detail::load_be16(data + 12) != detail::kEtherTypeVlan ||
        (detail::load_be16(data + 14) & 0x0fff) != vid_)
      return false;
    inband_tag = true;
  }
  if (detail::ether_type(data + (inband_tag ? 4 : 0), len) != detail::kEtherTypeHyperScsi)
    return false;
  out = pool_.alloc();
  if (!out || !out.resize(len)) {
    out.reset();
    ++counters_.rx_dropped;  // no buffer
    return false;
  }
  std::memcpy(out.data(), data, len);
  if (inband_tag) detail::strip_vlan(out);
  return true;
}

size_t AfPacketPort::rx_burst(std::span<Packet> out) {
  size_t n = 0;
  // Skipped frames also free their slot; one lap of the ring at most per call.
  for (size_t seen = 0; n < out.size() && seen < frame_count_; ++seen) {
    tpacket2_hdr* hdr = slot(cur_frame_);
    if ((__atomic_load_n(&hdr->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) == 0) break;
    if (take_frame(hdr, out[n])) {
      ++counters_.rx_frames;
      counters_.rx_bytes += out[n].size();
      ++n;
    }
    __atomic_store_n(&hdr->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    cur_frame_ = (cur_frame_ + 1) % frame_count_;
  }
  if (n > 0) {
    empty_rx_ = 0;
  } else if (++empty_rx_ >= 8) {
    // Setting the interface down leaves ENETDOWN pending on the socket, and
    // poll/epoll report POLLERR on fd() until someone reads it (nothing in
    // the ring path does), so a loop waiting on fd() would spin for the whole
    // outage. Reading SO_ERROR clears it; only after a run of empty receives,
    // so the busy path pays no syscall.
    empty_rx_ = 0;
    int err = 0;
    socklen_t len = sizeof err;
    (void)::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
  }
  return n;
}

// What a full transmit path answers, and what the caller is told to wait for:
// EAGAIN: the socket's send buffer (SO_SNDBUF) is full of frames the qdisc or
//   the driver still holds; it polls writable (EPOLLOUT) when they drain.
// ENOBUFS: the qdisc dropped the frame (its queue is full; tbf and a NIC's
//   default pfifo_fast/fq_codel both do this) or the driver's ring is full
//   under PACKET_QDISC_BYPASS; no event reports room, so the caller pauses.
// A qdisc with room (tbf below its limit, a NIC queue) simply holds frames:
// sendmmsg succeeds, and the sender's window is what bounds them.
size_t AfPacketPort::tx_burst(std::span<Packet> pkts) {
  const size_t max_frame = info_.mtu + detail::kEthHeader;
  size_t done = 0;
  tx_blocked_ = TxBlock::kNone;
  // A clock read unless a check is due (every 100 ms): tx_rate() follows
  // the shaper, and a PortSink pacing at it follows tx_rate().
  shaper_->poll();
  while (done < pkts.size()) {
    // Collect a run of valid frames; invalid ones are taken and counted. A
    // frame with a tail goes as two iovecs: the kernel copies the payload
    // from where it lies (no copy into the packet buffer: issue 20).
    msgs_.clear();
    iovs_.clear();
    size_t first = done;
    size_t count = 0;
    for (size_t i = done; i < pkts.size(); ++i) {
      Packet& p = pkts[i];
      const bool valid = p && p.size() >= detail::kEthHeader && p.frame_size() <= max_frame &&
                         (vid_ == 0 || detail::insert_vlan(p, vid_, pcp_));
      if (!valid) {
        if (i == first) {
          ++counters_.tx_errors;
          p.reset();
          first = ++done;
          continue;
        }
        break;
      }
      iovs_.push_back({p.data(), p.size()});
      if (!p.tail().empty())
        iovs_.push_back({const_cast<uint8_t*>(p.tail().data()), p.tail().size()});
      ++count;
    }
    if (count == 0) continue;
    msgs_.resize(count);
    for (size_t i = 0, k = 0; i < count; ++i) {
      const size_t pieces = pkts[first + i].tail().empty() ? 1 : 2;
      msgs_[i] = {};
      msgs_[i].msg_hdr.msg_iov = &iovs_[k];
      msgs_[i].msg_hdr.msg_iovlen = pieces;
      k += pieces;
    }
    const int sent =
        ::sendmmsg(fd_, msgs_.data(), static_cast<unsigned>(msgs_.size()), MSG_DONTWAIT);
    if (sent < 0) {
      const int err = errno;
      // The VLAN tags inserted above stay: strip them from what the caller keeps.
      if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EINTR) {
        for (size_t i = first; i < first + count; ++i)
          if (vid_ != 0) detail::strip_vlan(pkts[i]);
        ++counters_.tx_dropped;
        if (err == ENOBUFS || err == EINTR) {
          tx_blocked_ = TxBlock::kQueueFull;
          ++counters_.tx_blocked_queue;
        } else {
          tx_blocked_ = TxBlock::kSocketFull;
          ++counters_.tx_blocked_socket;
        }
        return done;
      }
      // Hard error (e.g. ENETDOWN): the first frame is lost, like on a dead wire.
      ++counters_.tx_errors;
      pkts[first].reset();
      for (size_t i = first + 1; i < first + count; ++i)
        if (vid_ != 0) detail::strip_vlan(pkts[i]);
      ++done;
      continue;
    }
    for (int i = 0; i < sent; ++i) {
      ++counters_.tx_frames;
      counters_.tx_bytes += pkts[first + static_cast<size_t>(i)].frame_size();
      pkts[first + static_cast<size_t>(i)].reset();
    }
    done += static_cast<size_t>(sent);
    // A short count hides the error that stopped it: strip the tags and go
    // round again, where the first frame left answers with its errno.
    for (size_t i = done; i < first + count; ++i)
      if (vid_ != 0) detail::strip_vlan(pkts[i]);
  }
  return done;
}

}  // namespace

Result<std::unique_ptr<Port>, PortError> open_afpacket_port(std::string_view iface,
                                                            const PortOptions& options) {
  auto info = detail::require_up_interface("afpacket", iface);
  if (!info) return Unexpected(info.error());
  if (options.vlan_id > 4094 || options.vlan_priority > 7)
    return Unexpected(PortError{PortErrorKind::kBadArgument,
                                "afpacket: vlan_id must be 0..4094 and vlan_priority 0..7"});
  if (options.pool_size == 0)
    return Unexpected(PortError{PortErrorKind::kBadArgument, "afpacket: pool_size must be > 0"});
  auto port =
      std::make_unique<AfPacketPort>("afpacket:" + std::string(iface), std::move(*info), options);
  auto st = port->open(options);
  if (!st) return Unexpected(st.error());
  std::unique_ptr<Port> out = std::move(port);
  return out;
}

}  // namespace hyperscsi::io
