#ifndef CAFFE_UTIL_NPAIR_CPU_THREADS_HPP_
#define CAFFE_UTIL_NPAIR_CPU_THREADS_HPP_

namespace caffe {
namespace npair_cpu {

/// Below this many rows a pass over rows stays on one thread: starting and
/// joining a team of threads costs more than such a pass (and far more on a
/// machine whose cores are busy with other work).
const int kMinParallelRows = 128;

}  // namespace npair_cpu
}  // namespace caffe

#endif  // CAFFE_UTIL_NPAIR_CPU_THREADS_HPP_
