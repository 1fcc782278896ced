#include <algorithm>
#include <string>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layers/cross_batch_memory_layer.hpp"
#include "caffe/net.hpp"
#include "caffe/sgd_solvers.hpp"
#include "caffe/util/math_functions.hpp"

#include "caffe/test/test_caffe_main.hpp"

namespace caffe {

template <typename TypeParam>
class CrossBatchMemoryLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  CrossBatchMemoryLayerTest() : next_value_(0) {
    bottom_.push_back(&features_);
    bottom_.push_back(&labels_);
    top_.push_back(&rows_);
    top_.push_back(&row_labels_);
  }

  static LayerParameter Param(const int size, const int warmup,
      const Phase phase = TRAIN) {
    LayerParameter param;
    param.mutable_cross_batch_memory_param()->set_size(size);
    param.mutable_cross_batch_memory_param()->set_warmup(warmup);
    param.set_phase(phase);
    return param;
  }

  // A batch of num rows of 3 values, each row's values and label numbered
  // from where the last batch stopped: row r of all batches so far holds
  // 3 r, 3 r + 1, 3 r + 2 and label r.
  void NextBatch(const int num) {
    features_.Reshape(num, 3, 1, 1);
    labels_.Reshape(vector<int>(1, num));
    for (int i = 0; i < num; ++i, ++next_value_) {
      for (int k = 0; k < 3; ++k) {
        features_.mutable_cpu_data()[i * 3 + k] = 3 * next_value_ + k;
      }
      labels_.mutable_cpu_data()[i] = next_value_;
    }
  }

  // The row numbers the tops hold, checking each row against its label.
  vector<int> RowsInTops() const {
    vector<int> out;
    EXPECT_EQ(rows_.shape(0), row_labels_.count());
    for (int i = 0; i < row_labels_.count(); ++i) {
      const int r = row_labels_.cpu_data()[i];
      for (int k = 0; k < 3; ++k) {
        EXPECT_EQ(3 * r + k, rows_.cpu_data()[i * 3 + k]) << "row " << i;
      }
      out.push_back(r);
    }
    return out;
  }

  static vector<int> Rows(const int* r, const int n) {
    return vector<int>(r, r + n);
  }

  Blob<Dtype> features_, labels_, rows_, row_labels_;
  vector<Blob<Dtype>*> bottom_, top_;
  int next_value_;
};

TYPED_TEST_CASE(CrossBatchMemoryLayerTest, TestDtypesAndDevices);

TYPED_TEST(CrossBatchMemoryLayerTest, TestWarmupThenFirstInFirstOut) {
  typedef typename TypeParam::Dtype Dtype;
  CrossBatchMemoryLayer<Dtype> layer(this->Param(5, 2));
  this->NextBatch(2);
  layer.SetUp(this->bottom_, this->top_);
  EXPECT_EQ(3, layer.blobs().size());
  // Two warm-up passes: nothing handed out, nothing stored.
  for (int pass = 0; pass < 2; ++pass) {
    layer.Forward(this->bottom_, this->top_);
    EXPECT_EQ(0, this->rows_.shape(0));
    EXPECT_EQ(3, this->rows_.count(1));
    this->NextBatch(2);
  }
  // Batches 2, 3, 4, ... (rows 4, 5 / 6, 7 / ...): each pass hands out what
  // the earlier ones stored, then stores its own, over the oldest rows.
  const int expected[][5] = {{-1}, {4, 5}, {4, 5, 6, 7}, {9, 5, 6, 7, 8},
                             {9, 10, 11, 7, 8}};
  const int counts[] = {0, 2, 4, 5, 5};
  for (int pass = 0; pass < 5; ++pass) {
    SCOPED_TRACE(pass);
    layer.Forward(this->bottom_, this->top_);
    EXPECT_EQ(this->Rows(expected[pass], counts[pass]), this->RowsInTops());
    this->NextBatch(2);
  }
}

TYPED_TEST(CrossBatchMemoryLayerTest, TestBatchLargerThanTheMemory) {
  typedef typename TypeParam::Dtype Dtype;
  CrossBatchMemoryLayer<Dtype> layer(this->Param(3, 0));
  this->NextBatch(2);  // rows 0, 1
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  this->NextBatch(5);  // rows 2 to 6: only 4, 5, 6 stay
  layer.Forward(this->bottom_, this->top_);
  const int first[] = {0, 1};
  EXPECT_EQ(this->Rows(first, 2), this->RowsInTops());
  this->NextBatch(1);
  layer.Forward(this->bottom_, this->top_);
  // Rows 4, 5, 6 went to slots 2, 0, 1 (the next slot was 2).
  const int second[] = {5, 6, 4};
  EXPECT_EQ(this->Rows(second, 3), this->RowsInTops());
}

TYPED_TEST(CrossBatchMemoryLayerTest, TestNotUsedInTest) {
  typedef typename TypeParam::Dtype Dtype;
  CrossBatchMemoryLayer<Dtype> train(this->Param(4, 0));
  CrossBatchMemoryLayer<Dtype> test(this->Param(4, 0, TEST));
  this->NextBatch(2);
  train.SetUp(this->bottom_, this->top_);
  train.Forward(this->bottom_, this->top_);
  train.Forward(this->bottom_, this->top_);
  ASSERT_EQ(2, this->RowsInTops().size());
  // A TEST layer sharing the TRAIN layer's memory, as a TEST net does.
  test.blobs() = train.blobs();
  test.SetUp(this->bottom_, this->top_);
  const vector<Dtype> counters(train.blobs()[2]->cpu_data(),
                               train.blobs()[2]->cpu_data() + 3);
  for (int pass = 0; pass < 3; ++pass) {
    test.Forward(this->bottom_, this->top_);
    EXPECT_EQ(0, this->rows_.shape(0));
    EXPECT_EQ(0, this->row_labels_.count());
  }
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(counters[c], train.blobs()[2]->cpu_data()[c]);
  }
}

TYPED_TEST(CrossBatchMemoryLayerTest, TestSolverLeavesTheMemoryAlone) {
  typedef typename TypeParam::Dtype Dtype;
  CrossBatchMemoryLayer<Dtype> layer(this->Param(4, 0));
  this->NextBatch(2);
  layer.SetUp(this->bottom_, this->top_);
  ASSERT_EQ(3, layer.layer_param().param_size());
  for (int b = 0; b < 3; ++b) {
    EXPECT_EQ(0, layer.layer_param().param(b).lr_mult());
    EXPECT_EQ(0, layer.layer_param().param(b).decay_mult());
  }
}

TYPED_TEST(CrossBatchMemoryLayerTest, TestNoGradient) {
  typedef typename TypeParam::Dtype Dtype;
  CrossBatchMemoryLayer<Dtype> layer(this->Param(4, 0));
  this->NextBatch(3);
  layer.SetUp(this->bottom_, this->top_);
  EXPECT_FALSE(layer.AllowForceBackward(0));
  EXPECT_FALSE(layer.AllowForceBackward(1));
  layer.Forward(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  caffe_set(this->features_.count(), Dtype(7),
            this->features_.mutable_cpu_diff());
  layer.Backward(this->top_, vector<bool>(2, true), this->bottom_);
  for (int i = 0; i < this->features_.count(); ++i) {
    EXPECT_EQ(0, this->features_.cpu_diff()[i]);
  }
}

// The memory in a training net: a CrossBatchMemory feeding the N-pair
// loss's references, trained by SGD with momentum and weight decay. The
// memory's rows stay exactly what was stored (the solver never changes
// them), and a net made from a snapshot of the weights holds the same
// memory and counters.
template <typename Dtype>
class CrossBatchMemoryNetTest : public ::testing::Test {
 protected:
  static string NetText() {
    return "name: 'memory' "
        "layer { name: 'input' type: 'Input' top: 'x' top: 'y' "
        "  input_param { shape { dim: 6 dim: 4 } shape { dim: 6 } } } "
        "layer { name: 'fc' type: 'InnerProduct' bottom: 'x' top: 'feat' "
        "  inner_product_param { num_output: 3 "
        "    weight_filler { type: 'gaussian' std: 0.5 } } } "
        "layer { name: 'memory' type: 'CrossBatchMemory' bottom: 'feat' "
        "  bottom: 'y' top: 'mem' top: 'mem_label' "
        "  cross_batch_memory_param { size: 10 warmup: 2 } } "
        "layer { name: 'loss' type: 'NPairMultiClassLoss' bottom: 'feat' "
        "  bottom: 'y' bottom: 'mem' bottom: 'mem_label' top: 'loss' } ";
  }
};

TYPED_TEST_CASE(CrossBatchMemoryNetTest, TestDtypes);

TYPED_TEST(CrossBatchMemoryNetTest, TestTrainsAndSnapshotsWithTheMemory) {
  typedef TypeParam Dtype;
  Caffe::set_mode(Caffe::CPU);
  Caffe::set_random_seed(1701);
  SolverParameter solver_param;
  CHECK(google::protobuf::TextFormat::ParseFromString(
      "base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 lr_policy: 'fixed' "
      "max_iter: 9 display: 0 snapshot_after_train: false",
      &solver_param));
  CHECK(google::protobuf::TextFormat::ParseFromString(this->NetText(),
      solver_param.mutable_net_param()));
  SGDSolver<Dtype> solver(solver_param);
  const shared_ptr<Net<Dtype> > net = solver.net();
  const shared_ptr<Layer<Dtype> > memory = net->layer_by_name("memory");
  const Dtype labels[] = {0, 0, 1, 1, 2, 2};
  vector<vector<Dtype> > stored;  // each step's features, as they came
  for (int step = 0; step < 9; ++step) {
    Blob<Dtype>* x = net->blob_by_name("x").get();
    caffe_rng_gaussian<Dtype>(x->count(), 0, 1, x->mutable_cpu_data());
    std::copy(labels, labels + 6, net->blob_by_name("y")->mutable_cpu_data());
    solver.Step(1);
    // Backward and the update leave activations alone: 'feat' still holds
    // the features this step stored.
    const Blob<Dtype>& feat = *net->blob_by_name("feat");
    stored.push_back(vector<Dtype>(feat.cpu_data(),
                                   feat.cpu_data() + feat.count()));
  }
  EXPECT_GT(net->blob_by_name("loss")->cpu_data()[0], 0);
  // Steps 2 to 8 stored 7 batches of 6 rows (42) into 10 slots, row r of
  // them at slot r % 10: the last 10 rows are there.
  const Blob<Dtype>& rows = *memory->blobs()[0];
  for (int row = 42 - 10; row < 42; ++row) {
    const vector<Dtype>& batch = stored[2 + row / 6];
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(batch[(row % 6) * 3 + k], rows.cpu_data()[(row % 10) * 3 + k])
          << "row " << row;
    }
  }
  EXPECT_EQ(2, memory->blobs()[2]->cpu_data()[0]);   // warm-up passes
  EXPECT_EQ(2, memory->blobs()[2]->cpu_data()[1]);   // next slot
  EXPECT_EQ(10, memory->blobs()[2]->cpu_data()[2]);  // rows stored

  // The memory travels with the weights.
  NetParameter weights;
  net->ToProto(&weights);
  NetParameter net_param;
  CHECK(google::protobuf::TextFormat::ParseFromString(this->NetText(),
                                                      &net_param));
  net_param.mutable_state()->set_phase(TRAIN);
  Net<Dtype> copy(net_param);
  copy.CopyTrainedLayersFrom(weights);
  for (int b = 0; b < 3; ++b) {
    const Blob<Dtype>& a = *memory->blobs()[b];
    const Blob<Dtype>& c = *copy.layer_by_name("memory")->blobs()[b];
    ASSERT_EQ(a.count(), c.count());
    for (int i = 0; i < a.count(); ++i) {
      EXPECT_EQ(a.cpu_data()[i], c.cpu_data()[i]) << "blob " << b;
    }
  }
}

template <typename Dtype>
class CrossBatchMemoryLayerDeathTest : public ::testing::Test {
 protected:
  CrossBatchMemoryLayerDeathTest()
      : features_(4, 3, 1, 1), labels_(vector<int>(1, 4)) {
    ::testing::FLAGS_gtest_death_test_style = "threadsafe";
    bottom_.push_back(&features_);
    bottom_.push_back(&labels_);
    top_.push_back(&rows_);
    top_.push_back(&row_labels_);
  }
  Blob<Dtype> features_, labels_, rows_, row_labels_;
  vector<Blob<Dtype>*> bottom_, top_;
};

TYPED_TEST_CASE(CrossBatchMemoryLayerDeathTest, TestDtypes);

TYPED_TEST(CrossBatchMemoryLayerDeathTest, TestSize) {
  LayerParameter param;
  CrossBatchMemoryLayer<TypeParam> missing(param);
  EXPECT_DEATH(missing.SetUp(this->bottom_, this->top_),
               "CrossBatchMemory Layer: cross_batch_memory_param.size, how "
               "many samples the memory holds, must be given and at least 1; "
               "got 0");
  param.mutable_cross_batch_memory_param()->set_size(0);
  CrossBatchMemoryLayer<TypeParam> zero(param);
  EXPECT_DEATH(zero.SetUp(this->bottom_, this->top_),
               "must be given and at least 1; got 0");
}

TYPED_TEST(CrossBatchMemoryLayerDeathTest, TestLearningRate) {
  LayerParameter param;
  param.mutable_cross_batch_memory_param()->set_size(8);
  param.add_param()->set_lr_mult(0);
  param.add_param()->set_lr_mult(1);
  CrossBatchMemoryLayer<TypeParam> layer(param);
  EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
               "CrossBatchMemory Layer: its blobs are the memory, which the "
               "solver must not change: a param of this layer needs lr_mult: "
               "0 and decay_mult: 0");
}

TYPED_TEST(CrossBatchMemoryLayerDeathTest, TestRowShape) {
  LayerParameter param;
  param.mutable_cross_batch_memory_param()->set_size(8);
  CrossBatchMemoryLayer<TypeParam> layer(param);
  layer.SetUp(this->bottom_, this->top_);
  this->features_.Reshape(4, 5, 1, 1);
  EXPECT_DEATH(layer.Reshape(this->bottom_, this->top_),
               "CrossBatchMemory Layer: bottom\\[0\\] must hold rows of the "
               "shape the memory was made for");
}

TYPED_TEST(CrossBatchMemoryLayerDeathTest, TestLabelCount) {
  LayerParameter param;
  param.mutable_cross_batch_memory_param()->set_size(8);
  CrossBatchMemoryLayer<TypeParam> layer(param);
  this->labels_.Reshape(vector<int>(1, 3));
  EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
               "CrossBatchMemory Layer: bottom\\[1\\] must hold exactly one "
               "label per sample");
}

}  // namespace caffe
