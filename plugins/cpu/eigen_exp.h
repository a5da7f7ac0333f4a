// exp and the logistic function for the Eigen tiles, IEEE's at both ends of float32's range. Include
// it after <Eigen/Core>, in a file compiled once per instruction set with Eigen renamed to that set's
// namespace (expert_ffn_tile.cc, masked_attention_tile.cc): its functors have internal linkage, so
// that no copy built for a wider set can serve another.
//
// Eigen's vector exp clamps its input to about [-88.7, 88.7]. Below, its generic form (baseline and
// AVX2) gives about 2^-128 and its AVX-512 form 0, however small exp(x) is; above, the largest float
// rather than Inf. Where a 0 or an Inf decides the answer, that parts from the references (torch's
// exp): an attention weight that underflows must be 0, so that its key adds nothing even where its
// value is Inf; silu(-Inf) and quick_gelu(-Inf) are -Inf * 0 = NaN. Outside the normal range, Exp
// takes exp(x / 2)^2, which rounds to std::exp's subnormal, 0 or Inf (within an ulp); inside, it is
// Eigen's exp itself, and a packet with no such x pays two compares.
#pragma once

#include <cmath>

namespace bucketrt::cpu {
namespace {

constexpr float kLnFloatMin = -87.336544f;  // ln(2^-126): exp(x) below is subnormal or 0
constexpr float kLnFloatMax = 88.722839f;   // ln(FLT_MAX): exp(x) above is Inf

template <typename Packet>
Packet ExpPacket(const Packet& x) {
  using namespace Eigen::internal;
  const Packet outside = por(pcmp_lt(x, pset1<Packet>(kLnFloatMin)), pcmp_lt(pset1<Packet>(kLnFloatMax), x));
  const Packet e = pexp(x);
  if (!predux_any(outside)) return e;
  const Packet half = pexp(pmul(x, pset1<Packet>(0.5f)));
  return pselect(outside, pmul(half, half), e);
}

struct ExpOp {
  float operator()(float x) const { return std::exp(x); }
  template <typename Packet>
  Packet packetOp(const Packet& x) const {
    return ExpPacket(x);
  }
};

// 1 / (1 + exp(-x)), as torch computes sigmoid: 0 at -Inf, 1 at +Inf.
struct LogisticOp {
  float operator()(float x) const { return 1.0f / (1.0f + std::exp(-x)); }
  template <typename Packet>
  Packet packetOp(const Packet& x) const {
    using namespace Eigen::internal;
    const Packet one = pset1<Packet>(1.0f);
    return pdiv(one, padd(one, ExpPacket(pnegate(x))));
  }
};

template <class A>
auto Exp(const A& a) {
  return a.unaryExpr(ExpOp());
}
template <class A>
auto Logistic(const A& a) {
  return a.unaryExpr(LogisticOp());
}

}  // namespace
}  // namespace bucketrt::cpu

namespace Eigen::internal {
template <>
struct functor_traits<bucketrt::cpu::ExpOp> {
  enum { Cost = functor_traits<scalar_exp_op<float>>::Cost + 2, PacketAccess = packet_traits<float>::HasExp };
};
template <>
struct functor_traits<bucketrt::cpu::LogisticOp> {
  enum {
    Cost = functor_traits<scalar_exp_op<float>>::Cost + 3 + scalar_div_cost<float, packet_traits<float>::HasDiv>::value,
    PacketAccess = packet_traits<float>::HasExp && packet_traits<float>::HasDiv
  };
};
}  // namespace Eigen::internal
