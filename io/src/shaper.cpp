#include "shaper.h"

#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <string_view>
#include <vector>

namespace hyperscsi::io::detail {
namespace {

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// The attributes in [p, p + len): calls fn(type, payload) for each.
template <typename Fn>
void for_each_attr(const uint8_t* p, size_t len, Fn&& fn) {
  while (len >= sizeof(rtattr)) {
    rtattr a;
    std::memcpy(&a, p, sizeof a);
    if (a.rta_len < sizeof(rtattr) || a.rta_len > len) return;
    fn(a.rta_type & NLA_TYPE_MASK,
       std::basic_string_view<uint8_t>(p + RTA_LENGTH(0), a.rta_len - RTA_LENGTH(0)));
    const size_t step = RTA_ALIGN(a.rta_len);
    if (step >= len) return;
    p += step;
    len -= step;
  }
}

// The rate of one RTM_NEWQDISC message if it is the root tbf of `ifindex`.
uint64_t tbf_rate_of(const uint8_t* msg, size_t len, int ifindex) {
  if (len < NLMSG_LENGTH(sizeof(tcmsg))) return 0;
  tcmsg t;
  std::memcpy(&t, msg + NLMSG_HDRLEN, sizeof t);
  if (t.tcm_ifindex != ifindex || t.tcm_parent != TC_H_ROOT) return 0;
  const size_t off = NLMSG_LENGTH(sizeof(tcmsg));
  bool tbf = false;
  uint64_t rate = 0, rate64 = 0;
  for_each_attr(msg + off, len - off, [&](unsigned type, std::basic_string_view<uint8_t> v) {
    if (type == TCA_KIND) tbf = v.size() >= 4 && std::memcmp(v.data(), "tbf", 4) == 0;
    if (type != TCA_OPTIONS) return;
    for_each_attr(v.data(), v.size(), [&](unsigned t2, std::basic_string_view<uint8_t> o) {
      if (t2 == TCA_TBF_PARMS && o.size() >= sizeof(tc_tbf_qopt)) {
        tc_tbf_qopt q;
        std::memcpy(&q, o.data(), sizeof q);
        rate = q.rate.rate;
      } else if (t2 == TCA_TBF_RATE64 && o.size() >= sizeof(uint64_t)) {
        std::memcpy(&rate64, o.data(), sizeof rate64);
      }
    });
  });
  if (!tbf) return 0;
  return rate64 != 0 ? rate64 : rate;
}

}  // namespace

uint64_t root_tbf_rate(int ifindex) {
  Fd s{::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)};
  if (s.fd < 0) return 0;
  timeval tv{1, 0};  // the kernel answers at once; never hang a port's open on it
  ::setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct {
    nlmsghdr nh;
    tcmsg tc;
  } req{};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(tcmsg));
  req.nh.nlmsg_type = RTM_GETQDISC;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = 1;
  req.tc.tcm_family = AF_UNSPEC;
  req.tc.tcm_ifindex = ifindex;
  if (::send(s.fd, &req, req.nh.nlmsg_len, 0) < 0) return 0;
  std::vector<uint8_t> buf(32768);
  uint64_t found = 0;
  for (int rounds = 0; rounds < 1000; ++rounds) {
    const ssize_t n = ::recv(s.fd, buf.data(), buf.size(), 0);
    if (n <= 0) return found;
    size_t left = static_cast<size_t>(n);
    const uint8_t* p = buf.data();
    while (left >= sizeof(nlmsghdr)) {
      nlmsghdr h;
      std::memcpy(&h, p, sizeof h);
      if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > left) return found;
      if (h.nlmsg_type == NLMSG_DONE || h.nlmsg_type == NLMSG_ERROR) return found;
      if (h.nlmsg_type == RTM_NEWQDISC && found == 0) found = tbf_rate_of(p, h.nlmsg_len, ifindex);
      const size_t step = NLMSG_ALIGN(h.nlmsg_len);
      if (step >= left) break;
      p += step;
      left -= step;
    }
  }
  return found;
}

}  // namespace hyperscsi::io::detail
