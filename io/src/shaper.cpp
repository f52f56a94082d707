#include "shaper.h"

#include <libmnl/libmnl.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <vector>

namespace hyperscsi::io::detail {
namespace {

struct Query {
  int ifindex;
  TokenBucket found;
};

struct TbfOptions {
  const nlattr* parms = nullptr;
  const nlattr* rate64 = nullptr;
};

int tbf_option(const nlattr* attr, void* data) {
  auto* opts = static_cast<TbfOptions*>(data);
  switch (mnl_attr_get_type(attr)) {
    case TCA_TBF_PARMS:
      if (mnl_attr_validate2(attr, MNL_TYPE_UNSPEC, sizeof(tc_tbf_qopt)) == 0) opts->parms = attr;
      break;
    case TCA_TBF_RATE64:
      if (mnl_attr_validate(attr, MNL_TYPE_U64) == 0) opts->rate64 = attr;
      break;
    default:
      break;
  }
  return MNL_CB_OK;
}

struct QdiscAttrs {
  bool tbf = false;
  const nlattr* options = nullptr;
};

int qdisc_attr(const nlattr* attr, void* data) {
  auto* top = static_cast<QdiscAttrs*>(data);
  if (mnl_attr_get_type(attr) == TCA_KIND && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0)
    top->tbf = std::strcmp(mnl_attr_get_str(attr), "tbf") == 0;
  else if (mnl_attr_get_type(attr) == TCA_OPTIONS)
    top->options = attr;
  return MNL_CB_OK;
}

// One RTM_NEWQDISC of the dump: keeps it when it is the root tbf of the
// interface asked about.
int on_qdisc(const nlmsghdr* nlh, void* data) {
  auto* q = static_cast<Query*>(data);
  if (q->found.rate != 0 || nlh->nlmsg_len < mnl_nlmsg_size(sizeof(tcmsg))) return MNL_CB_OK;
  const auto* tc = static_cast<const tcmsg*>(mnl_nlmsg_get_payload(nlh));
  if (tc->tcm_ifindex != q->ifindex || tc->tcm_parent != TC_H_ROOT) return MNL_CB_OK;
  QdiscAttrs top;
  if (mnl_attr_parse(nlh, sizeof(tcmsg), qdisc_attr, &top) != MNL_CB_OK) return MNL_CB_OK;
  if (!top.tbf || top.options == nullptr) return MNL_CB_OK;
  TbfOptions opts;
  if (mnl_attr_parse_nested(top.options, tbf_option, &opts) != MNL_CB_OK || opts.parms == nullptr)
    return MNL_CB_OK;
  tc_tbf_qopt qopt;
  std::memcpy(&qopt, mnl_attr_get_payload(opts.parms), sizeof qopt);
  const uint64_t rate = opts.rate64 != nullptr ? mnl_attr_get_u64(opts.rate64) : qopt.rate.rate;
  // The kernel keeps the bucket as time: `buffer` psched ticks of 64 ns
  // (PSCHED_SHIFT) at the rate.
  const double bucket_ns = static_cast<double>(qopt.buffer) * 64.0;
  q->found = {rate, static_cast<uint64_t>(bucket_ns * static_cast<double>(rate) / 1e9)};
  return MNL_CB_OK;
}

struct SocketCloser {
  void operator()(mnl_socket* s) const { mnl_socket_close(s); }
};

// A netlink socket in the caller's namespace; `groups`: multicast groups to
// join (RTMGRP_*), non-blocking then.
mnl_socket* open_rtnl(unsigned groups) {
  mnl_socket* nl =
      mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | (groups != 0 ? SOCK_NONBLOCK : 0));
  if (nl == nullptr) return nullptr;
  if (mnl_socket_bind(nl, groups, MNL_SOCKET_AUTOPID) < 0) {
    mnl_socket_close(nl);
    return nullptr;
  }
  if (groups == 0) {
    timeval tv{1, 0};  // the kernel answers at once; never hang a port on it
    (void)::setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  return nl;
}

// Dumps the qdiscs of `ifindex` over `nl` and returns its root tbf.
TokenBucket query_root_tbf(mnl_socket* nl, int ifindex, unsigned seq) {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = RTM_GETQDISC;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  nlh->nlmsg_seq = seq;
  auto* tc = static_cast<tcmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(tcmsg)));
  tc->tcm_family = AF_UNSPEC;
  tc->tcm_ifindex = ifindex;
  if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) return {};

  Query q{ifindex, {}};
  const unsigned portid = mnl_socket_get_portid(nl);
  for (;;) {
    const ssize_t n = mnl_socket_recvfrom(nl, buf.data(), buf.size());
    if (n <= 0) break;
    // Replies to an earlier dump cut short by a timeout carry an older seq:
    // skipped (EPROTO), the dump goes on.
    const int r = mnl_cb_run(buf.data(), static_cast<size_t>(n), seq, portid, on_qdisc, &q);
    if (r == MNL_CB_ERROR && errno == EPROTO) continue;
    if (r <= MNL_CB_STOP) break;
  }
  return q.found;
}

int64_t coarse_now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

TokenBucket root_tbf(int ifindex) {
  std::unique_ptr<mnl_socket, SocketCloser> nl(open_rtnl(0));
  if (!nl) return {};
  return query_root_tbf(nl.get(), ifindex, static_cast<unsigned>(std::time(nullptr)));
}

ShaperWatch::ShaperWatch(int ifindex)
    : ifindex_(ifindex),
      query_(open_rtnl(0)),
      events_(open_rtnl(RTMGRP_TC)),
      seq_(static_cast<unsigned>(std::time(nullptr))) {
  // Subscribed before the first read: a change in between is not missed.
  current_ = read();
  rereads_ = 0;
  const int64_t now = coarse_now_ns();
  next_check_ns_ = now + kShaperCheckNs;
  next_reread_ns_ = now + kShaperRecheckNs;
}

ShaperWatch::~ShaperWatch() {
  if (events_ != nullptr) mnl_socket_close(events_);
  if (query_ != nullptr) mnl_socket_close(query_);
}

TokenBucket ShaperWatch::read() {
  ++rereads_;
  if (query_ == nullptr) return {};
  return query_root_tbf(query_, ifindex_, ++seq_);
}

bool ShaperWatch::drain_notifications() {
  bool any = false;
  char buf[8192];
  // Bounded: a storm of tc changes elsewhere costs one check at most this much.
  for (int i = 0; i < 64; ++i) {
    const ssize_t n = ::recv(mnl_socket_get_fd(events_), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      any = true;
    } else if (n < 0 && errno == ENOBUFS) {
      any = true;  // the socket overran: some were lost, so assume a change
    } else {
      break;
    }
  }
  return any;
}

bool ShaperWatch::poll() {
  const int64_t now = coarse_now_ns();
  if (now < next_check_ns_) return false;
  next_check_ns_ = now + kShaperCheckNs;
  bool due;
  if (events_ != nullptr) {
    due = drain_notifications();
  } else {
    due = now >= next_reread_ns_;
    if (due) next_reread_ns_ = now + kShaperRecheckNs;
  }
  if (!due) return false;
  const TokenBucket was = current_;
  current_ = read();
  return !(current_ == was);
}

}  // namespace hyperscsi::io::detail
