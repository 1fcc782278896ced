// NPairMiner on the GPU: the thresholds of Mine_cpu by the device passes of
// npair_gpu_passes.hpp, one block per query: HARD / EASY by a reduction of
// each query's candidates (GLOBAL: then of those N values), RELATIVE_* by
// radix select, the positives' lists as well as the negatives' (the device
// sweeps every row at the same cost, so it needs no index of positives).

#include <cmath>

#include "caffe/util/npair_gpu_passes.hpp"
#include "caffe/util/npair_miner.hpp"

namespace caffe {

template <typename Dtype>
void NPairMiner<Dtype>::Mine_gpu(const NPairSimilarities<Dtype>& sim) {
  typedef NPairLossParameter P;
  const P::MiningMethod ap = param_.ap_mining_method();
  const P::MiningMethod an = param_.an_mining_method();
  const bool pos_extreme = ap != P::RAND && !NPairIsRelative(ap);
  const bool neg_extreme = an != P::RAND && !NPairIsRelative(an);
  Dtype* pos_threshold = pos_threshold_.mutable_gpu_data();
  Dtype* neg_threshold = neg_threshold_.mutable_gpu_data();
  if (pos_extreme || neg_extreme) {
    npair_gpu::RowExtremes(sim, pos_extreme ? pos_threshold : NULL,
                           neg_extreme ? neg_threshold : NULL);
  }
  const bool pos_global = param_.ap_mining_region() == P::GLOBAL;
  const bool neg_global = param_.an_mining_region() == P::GLOBAL;
  if (pos_extreme && pos_global) {
    npair_gpu::BatchExtreme(sim.num, true, pos_threshold);
  }
  if (neg_extreme && neg_global) {
    npair_gpu::BatchExtreme(sim.num, false, neg_threshold);
  }
  NPairRadixState* state =
      static_cast<NPairRadixState*>(radix_state_.mutable_gpu_data());
  const Dtype inf = HUGE_VAL;
  if (NPairIsRelative(ap)) {
    npair_gpu::RelativeThresholds(sim, true, pos_global, param_.identsn(),
                                  -inf, state, pos_threshold);
  }
  if (NPairIsRelative(an)) {
    npair_gpu::RelativeThresholds(sim, false, neg_global, param_.diffsn(),
                                  inf, state, neg_threshold);
  }
}

template void NPairMiner<float>::Mine_gpu(const NPairSimilarities<float>&);
template void NPairMiner<double>::Mine_gpu(const NPairSimilarities<double>&);

}  // namespace caffe
