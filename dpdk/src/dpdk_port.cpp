// The DPDK Port: set-up (EAL, ethdev, mempool) and the burst data path.
#include "hyperscsi/dpdk/dpdk_port.h"

#include <net/if.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>

#include "eal_config.h"
#include "eal_runtime.h"
#include "ethernet.h"
#include "mbuf_pool.h"

namespace hyperscsi::dpdk {
namespace {

using io::PortError;
using io::PortErrorKind;

Unexpected<PortError> fail(PortErrorKind kind, std::string message) {
  return Unexpected(PortError{kind, std::move(message)});
}

// Kernel MTU of an interface in this network namespace, if it exists.
std::optional<size_t> kernel_mtu(const std::string& ifname) {
  const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return std::nullopt;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  const int rc = ioctl(s, SIOCGIFMTU, &ifr);
  close(s);
  if (rc < 0) return std::nullopt;
  return static_cast<size_t>(ifr.ifr_mtu);
}

// Free default-size hugepages and whether hugetlbfs is mounted.
std::pair<long, bool> hugepage_state() {
  long free_pages = 0;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  while (meminfo >> key) {
    if (key == "HugePages_Free:") {
      meminfo >> free_pages;
      break;
    }
  }
  bool mounted = false;
  std::ifstream mounts("/proc/mounts");
  std::string dev, dir, type, rest;
  while (mounts >> dev >> dir >> type && std::getline(mounts, rest))
    if (type == "hugetlbfs") mounted = true;
  return {free_pages, mounted};
}

constexpr size_t kMaxBurst = 64;

// ethdev control operations are not thread-safe: opening and closing ports
// are serialised process-wide.
std::mutex& control_mutex() {
  static std::mutex m;
  return m;
}

class DpdkPortImpl final : public DpdkPort {
 public:
  DpdkPortImpl(std::string spec, std::shared_ptr<EalRuntime> eal, uint16_t port_id,
               std::string name, MbufPool* pool, size_t mtu, const io::PortOptions& options,
               io::MacAddress mac)
      : spec_(std::move(spec)),
        eal_(std::move(eal)),
        port_id_(port_id),
        name_(std::move(name)),
        pool_(pool),
        mtu_(mtu),
        vlan_id_(options.vlan_id),
        vlan_priority_(options.vlan_priority),
        mac_(mac) {}

  ~DpdkPortImpl() override {
    // Stop and close first: that frees the mbufs the PMD still holds, which
    // come from our mempool. Packets the caller holds keep the pool alive.
    std::lock_guard lock(control_mutex());
    rte_eth_dev_stop(port_id_);
    rte_eth_dev_close(port_id_);
    eal_->release_port(port_id_);
    pool_->drop_owner();
  }

  std::string_view spec() const override { return spec_; }
  io::MacAddress mac() const override { return mac_; }
  size_t mtu() const override { return mtu_; }
  int fd() const override { return -1; }
  bool wait_rx(std::chrono::microseconds) override { return true; }
  io::Packet alloc() override { return pool_->alloc(); }

  uint64_t rx_filtered() const override { return rx_filtered_; }
  std::string_view device_name() const override { return name_; }
  bool link_up() const override {
    rte_eth_link link{};
    return rte_eth_link_get_nowait(port_id_, &link) == 0 && link.link_status == RTE_ETH_LINK_UP;
  }

  io::PortCounters counters() const override {
    io::PortCounters c = own_;
    rte_eth_stats st{};
    if (rte_eth_stats_get(port_id_, &st) == 0) {
      c.rx_dropped += st.imissed + st.rx_nombuf;
      c.rx_errors += st.ierrors;
      c.tx_errors += st.oerrors;
    }
    return c;
  }

  size_t rx_burst(std::span<io::Packet> out) override {
    size_t delivered = 0;
    // A few PMD calls at most: filtered frames may leave room in `out`.
    for (int round = 0; round < 4 && delivered < out.size(); ++round) {
      std::array<rte_mbuf*, kMaxBurst> mbufs;
      const uint16_t want = static_cast<uint16_t>(std::min(out.size() - delivered, kMaxBurst));
      const uint16_t got = rte_eth_rx_burst(port_id_, 0, mbufs.data(), want);
      for (uint16_t i = 0; i < got; ++i) {
        if (deliver(mbufs[i], out[delivered])) ++delivered;
      }
      if (got < want) break;
    }
    return delivered;
  }

  size_t tx_burst(std::span<io::Packet> pkts) override {
    size_t done = 0;
    while (done < pkts.size()) {
      const size_t chunk = std::min(pkts.size() - done, kMaxBurst);
      const size_t taken = tx_chunk(pkts.subspan(done, chunk));
      done += taken;
      if (taken < chunk) {
        own_.tx_dropped += pkts.size() - done;
        break;
      }
    }
    return done;
  }

 private:
  enum class TxKind : uint8_t { kZeroCopy, kCopied, kInvalid };

  // Filters, strips the tag and wraps one received mbuf; frees it otherwise.
  bool deliver(rte_mbuf* m, io::Packet& slot) {
    if (m->nb_segs > 1 && rte_pktmbuf_linearize(m) != 0) {
      ++own_.rx_errors;  // chained frame that does not fit one buffer
      rte_pktmbuf_free(m);
      return false;
    }
    uint8_t* frame = rte_pktmbuf_mtod(m, uint8_t*);
    eth::Verdict v;
    if ((m->ol_flags & RTE_MBUF_F_RX_VLAN_STRIPPED) != 0) {
      // The PMD already removed the tag (into vlan_tci): filter on that.
      v = (m->vlan_tci & 0x0FFF) == vlan_id_ && m->data_len >= eth::kHeaderSize &&
                  eth::load_be16(frame + 12) == eth::kEtherTypeHyperScsi
              ? eth::Verdict::kDeliverUntagged
              : eth::Verdict::kDrop;
    } else {
      v = eth::classify(frame, m->data_len, vlan_id_);
    }
    if (v == eth::Verdict::kDrop) {
      ++rx_filtered_;
      rte_pktmbuf_free(m);
      return false;
    }
    if (v == eth::Verdict::kDeliverTagged) {
      eth::remove_tag(frame);
      rte_pktmbuf_adj(m, eth::kVlanTagSize);
    }
    slot = pool_->wrap(m);
    ++own_.rx_frames;
    own_.rx_bytes += m->data_len;
    return true;
  }

  // Points an mbuf at a Packet's bytes (the Packet's buffer is the mbuf's).
  static void frame_mbuf(rte_mbuf* m, const io::Packet& p) {
    m->data_off = static_cast<uint16_t>(p.headroom());
    m->data_len = static_cast<uint16_t>(p.size());
    m->pkt_len = static_cast<uint32_t>(p.size());
    m->nb_segs = 1;
    m->next = nullptr;
    m->ol_flags = 0;
  }

  // Copies a Packet from a foreign pool into a fresh mbuf, tagging on the way.
  rte_mbuf* copy_to_mbuf(const io::Packet& p) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool_->mempool());
    if (m == nullptr) return nullptr;
    const size_t tag = vlan_id_ != 0 ? eth::kVlanTagSize : 0;
    auto* dst =
        reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, static_cast<uint16_t>(p.size() + tag)));
    if (dst == nullptr) {
      rte_pktmbuf_free(m);
      return nullptr;
    }
    if (tag != 0) {
      std::memcpy(dst + tag, p.data(), p.size());
      eth::insert_tag_after_prepend(dst, vlan_id_, vlan_priority_);
    } else {
      std::memcpy(dst, p.data(), p.size());
    }
    return m;
  }

  // Sends up to kMaxBurst packets; returns how many the port took.
  size_t tx_chunk(std::span<io::Packet> pkts) {
    std::array<rte_mbuf*, kMaxBurst> mbufs;
    std::array<size_t, kMaxBurst> index;  // packet index of mbufs[j]
    std::array<TxKind, kMaxBurst> kind;
    size_t count = 0;  // mbufs prepared
    size_t limit = pkts.size();
    const size_t max_frame = mtu_ + eth::kHeaderSize;
    for (size_t i = 0; i < pkts.size(); ++i) {
      io::Packet& p = pkts[i];
      if (!p || p.size() < eth::kHeaderSize || p.size() > max_frame) {
        kind[i] = TxKind::kInvalid;
        continue;
      }
      MbufPool* owner = pool_->owns(p.cookie()) ? pool_ : nullptr;
      if (owner == nullptr && p.cookie() != nullptr) owner = MbufPool::find_owner(p.cookie());
      const bool tag = vlan_id_ != 0;
      if (owner != nullptr && (!tag || p.headroom() >= eth::kVlanTagSize)) {
        if (tag)
          eth::insert_tag_after_prepend(p.prepend(eth::kVlanTagSize), vlan_id_, vlan_priority_);
        auto* m = static_cast<rte_mbuf*>(p.cookie());
        frame_mbuf(m, p);
        kind[i] = TxKind::kZeroCopy;
        mbufs[count] = m;
      } else {
        rte_mbuf* m = copy_to_mbuf(p);
        if (m == nullptr) {  // pool exhausted: the caller keeps the rest
          limit = i;
          break;
        }
        kind[i] = TxKind::kCopied;
        mbufs[count] = m;
      }
      index[count++] = i;
    }
    const uint16_t sent =
        count == 0 ? 0 : rte_eth_tx_burst(port_id_, 0, mbufs.data(), static_cast<uint16_t>(count));
    const size_t taken = sent == count ? limit : index[sent];
    for (size_t i = 0; i < taken; ++i) {
      io::Packet& p = pkts[i];
      if (kind[i] == TxKind::kInvalid) {
        ++own_.tx_errors;  // empty, runt or oversized: dropped, not retried
        p.reset();
        continue;
      }
      ++own_.tx_frames;
      own_.tx_bytes += p.size();
      if (kind[i] == TxKind::kZeroCopy) {
        MbufPool::detach(p);  // the mbuf now belongs to the PMD
      } else {
        p.reset();  // the copy went out; the original returns to its pool
      }
    }
    // Give back what the PMD did not take, as it was.
    for (size_t j = sent; j < count; ++j) {
      io::Packet& p = pkts[index[j]];
      if (kind[index[j]] == TxKind::kCopied) {
        rte_pktmbuf_free(mbufs[j]);
      } else if (vlan_id_ != 0) {
        eth::remove_tag(p.data());
        p.trim_front(eth::kVlanTagSize);
      }
    }
    return taken;
  }

  std::string spec_;
  std::shared_ptr<EalRuntime> eal_;
  uint16_t port_id_;
  std::string name_;
  MbufPool* pool_;  // our reference is dropped in the destructor
  size_t mtu_;
  uint16_t vlan_id_;
  uint8_t vlan_priority_;
  io::MacAddress mac_;
  io::PortCounters own_;
  uint64_t rx_filtered_ = 0;
};

// Picks the ethdev: the first named device not open yet, else the first
// probed port not open yet. Claims it in the runtime.
Result<uint16_t, PortError> select_port(EalRuntime& eal, const EalConfig& cfg) {
  for (const std::string& name : cfg.devices) {
    uint16_t id = 0;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &id) == 0 && eal.claim_port(id)) return id;
  }
  uint16_t id = 0;
  size_t probed = 0;
  RTE_ETH_FOREACH_DEV(id) {
    ++probed;
    if (eal.claim_port(id)) return id;
  }
  if (probed == 0)
    return fail(
        PortErrorKind::kNoSuchInterface,
        "dpdk: no port found: the EAL probed no ethdev (give --vdev=... or a PCI device "
        "bound to a DPDK driver; a port closed earlier in this process cannot be reopened)");
  return fail(
      PortErrorKind::kNoSuchInterface,
      "dpdk: no port found: all " + std::to_string(probed) + " probed ports are already open");
}

// Releases a claimed, possibly configured ethdev when set-up fails halfway.
struct PortSetupGuard {
  EalRuntime& eal;
  uint16_t port_id;
  bool queues = false;  // queues may hold mbufs of a pool about to be freed
  bool armed = true;
  ~PortSetupGuard() {
    if (!armed) return;
    if (queues) {
      rte_eth_dev_stop(port_id);
      rte_eth_dev_close(port_id);
    }
    eal.release_port(port_id);
  }
};

std::atomic<unsigned> g_pool_serial{0};

// What can be checked before the EAL starts: the options, root, the
// af_packet vdevs' interfaces and hugepages.
Status<PortError> check_request(const EalConfig& cfg, const io::PortOptions& options) {
  if (options.vlan_id > 4094)
    return fail(PortErrorKind::kBadArgument,
                "dpdk: VLAN id " + std::to_string(options.vlan_id) + " out of range 0..4094");
  if (options.vlan_priority > 7)
    return fail(PortErrorKind::kBadArgument, "dpdk: VLAN priority must be 0..7");
  if (options.pool_size < 128)
    return fail(
        PortErrorKind::kBadArgument,
        "dpdk: pool_size " + std::to_string(options.pool_size) + " too small (at least 128 mbufs)");
  if (geteuid() != 0)
    return fail(PortErrorKind::kPermission,
                "dpdk: DPDK ports need root (hugepages, raw sockets, devices)");
  for (const VdevInterface& v : cfg.af_packet) {
    if (if_nametoindex(v.interface.c_str()) == 0)
      return fail(PortErrorKind::kNoSuchInterface,
                  "dpdk: no interface '" + v.interface + "' for vdev " + v.device);
  }
  if (!cfg.no_huge) {
    const auto [free_pages, mounted] = hugepage_state();
    const std::string what =
        cfg.uses_memif ? "net_memif needs hugepages" : "the EAL needs hugepages (or --no-huge)";
    if (free_pages <= 0)
      return fail(PortErrorKind::kBackendFailure,
                  "dpdk: no free hugepages: " + what +
                      "; reserve some (echo 512 > /proc/sys/vm/nr_hugepages) and mount hugetlbfs "
                      "(mount -t hugetlbfs nodev /dev/hugepages)");
    if (!mounted && !cfg.in_memory)
      return fail(
          PortErrorKind::kBackendFailure,
          "dpdk: hugetlbfs is not mounted: " + what +
              "; mount it (mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages) "
              "or pass --in-memory");
  }
  return {};
}

// The port's MTU and receive buffer size, and whether ethdev itself takes
// that MTU.
struct MtuPlan {
  size_t mtu = RTE_ETHER_MTU;
  size_t buffer_need = 0;  // receive buffers: a whole tagged frame, or what the PMD insists on
  bool ethdev_accepts = false;
};

// MTU: --hs-mtu, else the af_packet vdev's kernel interface, else the device's.
Result<MtuPlan, PortError> plan_mtu(const EalConfig& cfg, uint16_t port_id, const std::string& name,
                                    const rte_eth_dev_info& info) {
  const auto afp = std::find_if(cfg.af_packet.begin(), cfg.af_packet.end(),
                                [&](const VdevInterface& v) { return v.device == name; });
  const bool is_af_packet = afp != cfg.af_packet.end();
  size_t mtu = RTE_ETHER_MTU;
  if (cfg.mtu) {
    mtu = *cfg.mtu;
  } else if (is_af_packet) {
    if (auto kmtu = kernel_mtu(afp->interface)) mtu = *kmtu;
  } else {
    uint16_t cur = 0;
    if (rte_eth_dev_get_mtu(port_id, &cur) == 0 && cur != 0) mtu = cur;
  }
  const size_t max_frame = mtu + eth::kHeaderSize + eth::kVlanTagSize;
  // Receive buffers: a whole tagged frame, or what the PMD insists on.
  size_t buffer_need = max_frame;
  // Whether ethdev itself accepts the MTU. net_af_packet reports a 1518-byte
  // limit but carries frames up to its ring frame size (framesz minus the
  // 32-byte TPACKET2 header), so for it we check that limit ourselves.
  const bool ethdev_accepts = mtu >= info.min_mtu && mtu <= info.max_mtu &&
                              mtu + RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN <= info.max_rx_pktlen;
  if (is_af_packet) {
    constexpr size_t kTpacketHeader = 32;
    if (afp->frame_size < kTpacketHeader || max_frame > afp->frame_size - kTpacketHeader)
      return fail(
          PortErrorKind::kBadArgument,
          "dpdk: " + name + ": MTU " + std::to_string(mtu) + " needs ring frames of at least " +
              std::to_string(max_frame + kTpacketHeader) + " bytes; framesz is " +
              std::to_string(afp->frame_size) + " (add framesz=N,blocksz=M to the vdev, e.g. " +
              "framesz=12288,blocksz=12288 for MTU 9000)");
    buffer_need = std::max(buffer_need, afp->frame_size);
  } else if (!ethdev_accepts) {
    return fail(PortErrorKind::kBadArgument,
                "dpdk: " + name + ": MTU " + std::to_string(mtu) + " outside the device's range " +
                    std::to_string(info.min_mtu) + ".." + std::to_string(info.max_mtu) +
                    " (max frame " + std::to_string(info.max_rx_pktlen) + ")");
  }
  return MtuPlan{mtu, buffer_need, ethdev_accepts};
}

// One rx and one tx queue, the MTU where ethdev takes it.
Status<PortError> configure_device(uint16_t port_id, const std::string& name, const MtuPlan& plan) {
  const size_t mtu = plan.mtu;
  rte_eth_conf conf{};
  conf.rxmode.mtu = plan.ethdev_accepts ? static_cast<uint32_t>(mtu) : 0;
  if (int rc = rte_eth_dev_configure(port_id, 1, 1, &conf); rc != 0)
    return fail(rc == -EINVAL ? PortErrorKind::kBadArgument : PortErrorKind::kBackendFailure,
                "dpdk: " + name + ": rte_eth_dev_configure (1 rx/1 tx queue, MTU " +
                    std::to_string(mtu) + ") failed: " + rte_strerror(-rc));
  if (plan.ethdev_accepts) {
    if (int rc = rte_eth_dev_set_mtu(port_id, static_cast<uint16_t>(mtu));
        rc != 0 && rc != -ENOTSUP)
      return fail(PortErrorKind::kBadArgument, "dpdk: " + name + ": the PMD refused MTU " +
                                                   std::to_string(mtu) + ": " + rte_strerror(-rc));
  }
  return {};
}

// Sets the queues up (receiving into `pool`) and starts the device.
Status<PortError> start_device(uint16_t port_id, const std::string& name, uint16_t nb_rxd,
                               uint16_t nb_txd, int socket_id, MbufPool& pool) {
  if (int rc = rte_eth_rx_queue_setup(port_id, 0, nb_rxd, static_cast<unsigned>(socket_id), nullptr,
                                      pool.mempool());
      rc != 0)
    return fail(PortErrorKind::kBackendFailure,
                "dpdk: " + name + ": rx queue set-up failed: " + rte_strerror(-rc));
  if (int rc =
          rte_eth_tx_queue_setup(port_id, 0, nb_txd, static_cast<unsigned>(socket_id), nullptr);
      rc != 0)
    return fail(PortErrorKind::kBackendFailure,
                "dpdk: " + name + ": tx queue set-up failed: " + rte_strerror(-rc));
  if (int rc = rte_eth_dev_start(port_id); rc != 0)
    return fail(PortErrorKind::kBackendFailure,
                "dpdk: " + name + ": rte_eth_dev_start failed: " + rte_strerror(-rc));
  // Unicast to us and broadcast are all we need; PMDs without the op say ENOTSUP.
  rte_eth_promiscuous_disable(port_id);
  return {};
}

}  // namespace

Result<std::unique_ptr<io::Port>, io::PortError> open_dpdk_port(std::string_view eal_args,
                                                                const io::PortOptions& options) {
  auto parsed = parse_eal_config(eal_args);
  if (!parsed) return Unexpected(parsed.error());
  const EalConfig& cfg = parsed.value();
  if (auto st = check_request(cfg, options); !st) return Unexpected(st.error());

  std::lock_guard lock(control_mutex());
  auto eal = EalRuntime::acquire(cfg.eal_args);
  if (!eal) return Unexpected(eal.error());
  auto port = select_port(*eal.value(), cfg);
  if (!port) return Unexpected(port.error());
  const uint16_t port_id = port.value();
  PortSetupGuard guard{*eal.value(), port_id};

  char name_buf[RTE_ETH_NAME_MAX_LEN] = {};
  rte_eth_dev_get_name_by_port(port_id, name_buf);
  const std::string name(name_buf);
  rte_eth_dev_info info{};
  if (int rc = rte_eth_dev_info_get(port_id, &info); rc != 0)
    return fail(PortErrorKind::kBackendFailure,
                "dpdk: " + name + ": rte_eth_dev_info_get failed: " + rte_strerror(-rc));

  auto plan = plan_mtu(cfg, port_id, name, info);
  if (!plan) return Unexpected(plan.error());
  const size_t mtu = plan.value().mtu;
  if (auto st = configure_device(port_id, name, plan.value()); !st) return Unexpected(st.error());

  uint16_t nb_rxd = static_cast<uint16_t>(std::min<size_t>(1024, options.pool_size / 4));
  uint16_t nb_txd = nb_rxd;
  rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &nb_rxd, &nb_txd);

  int socket_id = rte_eth_dev_socket_id(port_id);
  if (socket_id < 0) socket_id = SOCKET_ID_ANY;
  std::string error;
  const size_t data_room = RTE_PKTMBUF_HEADROOM + plan.value().buffer_need;
  MbufPool* pool = MbufPool::create(eal.value(), "hs_pool" + std::to_string(g_pool_serial++),
                                    options.pool_size, data_room, socket_id, &error);
  if (pool == nullptr) return fail(PortErrorKind::kBackendFailure, "dpdk: " + name + ": " + error);
  struct PoolRef {  // drops our reference unless the port takes it over
    MbufPool* p;
    ~PoolRef() {
      if (p != nullptr) p->drop_owner();
    }
  } pool_ref{pool};

  guard.queues = true;
  if (auto st = start_device(port_id, name, nb_rxd, nb_txd, socket_id, *pool); !st)
    return Unexpected(st.error());

  rte_ether_addr addr{};
  io::MacAddress mac{};
  if (rte_eth_macaddr_get(port_id, &addr) == 0)
    std::copy(std::begin(addr.addr_bytes), std::end(addr.addr_bytes), mac.begin());

  guard.armed = false;
  pool_ref.p = nullptr;
  return std::unique_ptr<io::Port>(new DpdkPortImpl("dpdk:" + std::string(eal_args), eal.value(),
                                                    port_id, name, pool, mtu, options, mac));
}

}  // namespace hyperscsi::dpdk
