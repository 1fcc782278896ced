#ifdef USE_OPENCV
#include <opencv2/core/core.hpp>
#include <opencv2/imgcodecs/imgcodecs.hpp>

#include <algorithm>
#include <fstream>  // NOLINT(readability/streams)
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "glog/logging.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layer_factory.hpp"
#include "caffe/layers/npair_image_data_layer.hpp"
#include "caffe/proto/caffe.pb.h"
#include "caffe/util/io.hpp"

#include "caffe/test/test_caffe_main.hpp"

namespace caffe {

namespace {

// Writes image i of a list as a 2 x 3 PNG whose every pixel spells i in its
// blue and green bytes, so that a batch tells which images it holds.
string WriteImage(const string& dir, int i) {
  const string path = dir + "/" + format_int(i, 5) + ".png";
  cv::Mat image(2, 3, CV_8UC3, cv::Scalar(i % 256, i / 256, 7));
  CHECK(cv::imwrite(path, image)) << "cannot write " << path;
  return path;
}

// A list whose image i has label labels[i]; its lines are "path label".
string WriteList(const string& dir, const vector<int>& labels) {
  string list;
  MakeTempFilename(&list);
  std::ofstream out(list.c_str());
  for (int i = 0; i < labels.size(); ++i) {
    out << WriteImage(dir, i) << " " << labels[i] << "\n";
  }
  return list;
}

// Labels for classes of the given sizes: class c (label 10 c + 3) has
// sizes[c] images, the classes interleaved in the list.
vector<int> ClassLabels(const vector<int>& sizes) {
  const int total = std::accumulate(sizes.begin(), sizes.end(), 0);
  vector<int> labels;
  for (int round = 0; labels.size() < total; ++round) {
    for (int c = 0; c < sizes.size(); ++c) {
      if (round < sizes[c]) {
        labels.push_back(10 * c + 3);
      }
    }
  }
  return labels;
}

// The longest epoch that batches of p distinct classes, one K-tuple each, can
// make from classes holding tuples[c] tuples: the largest B with
// sum_c min(tuples[c], B) >= p B.
int LongestEpoch(const vector<int>& tuples, int p) {
  int best = 0;
  for (int b = 1; ; ++b) {
    int supply = 0;
    for (int c = 0; c < tuples.size(); ++c) {
      supply += std::min(tuples[c], b);
    }
    if (supply < p * b) {
      return best;
    }
    best = b;
  }
}

vector<int> TuplesOf(const vector<int>& sizes, int k) {
  vector<int> tuples;
  for (int c = 0; c < sizes.size(); ++c) {
    if (sizes[c] >= k) {
      tuples.push_back(sizes[c] / k);
    }
  }
  return tuples;
}

// Restores the single-solver state however a test ends.
struct SolverGuard {
  SolverGuard(int count, int rank) {
    Caffe::set_solver_count(count);
    Caffe::set_solver_rank(rank);
  }
  ~SolverGuard() {
    Caffe::set_solver_count(1);
    Caffe::set_solver_rank(0);
  }
};

// Collects the text of warnings, to see what set-up warned about.
class WarningSink : public google::LogSink {
 public:
  WarningSink() { google::AddLogSink(this); }
  ~WarningSink() { google::RemoveLogSink(this); }
  virtual void send(google::LogSeverity severity, const char*, const char*,
                    int, const struct ::tm*, const char* message,
                    size_t length) {
    if (severity == google::GLOG_WARNING) {
      warnings_.push_back(string(message, length));
    }
  }
  vector<string> warnings_;
};

}  // namespace

template <typename TypeParam>
class NPairImageDataLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  NPairImageDataLayerTest()
      : data_(new Blob<Dtype>()), label_(new Blob<Dtype>()) {
    MakeTempDir(&dir_);
    top_.push_back(data_.get());
    top_.push_back(label_.get());
  }

  LayerParameter Param(const string& list, int p, int k, int seed = 0) {
    LayerParameter param;
    param.set_name("pk");
    param.mutable_image_data_param()->set_source(list);
    NPairImageDataParameter* npair = param.mutable_npair_image_data_param();
    npair->set_classes_per_batch(p);
    npair->set_images_per_class(k);
    npair->set_seed(seed);
    return param;
  }

  // The images of the next batch, by index, after checking that every row's
  // label is its image's label in the list.
  vector<int> NextBatch(Layer<Dtype>* layer, const vector<int>& labels) {
    layer->Forward(bottom_, top_);
    const int num = data_->num();
    EXPECT_EQ(num, label_->count());
    vector<int> images(num);
    for (int n = 0; n < num; ++n) {
      const Dtype* pixel = data_->cpu_data() + data_->offset(n);
      images[n] = static_cast<int>(pixel[0]) +
                  256 * static_cast<int>(pixel[data_->offset(0, 1)]);
      EXPECT_EQ(labels[images[n]], label_->cpu_data()[n]) << "row " << n;
    }
    return images;
  }

  // Batches drawn from a list with these labels.
  vector<vector<int> > Draw(const LayerParameter& param,
                            const vector<int>& labels, int batches) {
    NPairImageDataLayer<Dtype> layer(param);
    layer.SetUp(bottom_, top_);
    vector<vector<int> > drawn;
    for (int b = 0; b < batches; ++b) {
      drawn.push_back(NextBatch(&layer, labels));
    }
    return drawn;
  }

  // Checks that a batch is P distinct classes of K consecutive images each.
  void ExpectPK(const vector<int>& batch, const vector<int>& labels, int p,
                int k) {
    ASSERT_EQ(p * k, batch.size());
    std::set<int> classes;
    for (int j = 0; j < p; ++j) {
      const int label = labels[batch[j * k]];
      classes.insert(label);
      for (int i = 1; i < k; ++i) {
        EXPECT_EQ(label, labels[batch[j * k + i]]) << "slot " << j;
      }
    }
    EXPECT_EQ(p, classes.size());
  }

  // Checks batches [first, first + count) for an image used twice; returns
  // how many images they use.
  int ExpectNoRepeat(const vector<vector<int> >& batches, int first,
                     int count) {
    std::set<int> seen;
    int used = 0;
    for (int b = first; b < first + count; ++b) {
      for (int i = 0; i < batches[b].size(); ++i) {
        EXPECT_TRUE(seen.insert(batches[b][i]).second)
            << "image " << batches[b][i] << " again in batch " << b;
        ++used;
      }
    }
    return used;
  }

  string dir_;
  shared_ptr<Blob<Dtype> > data_, label_;
  vector<Blob<Dtype>*> bottom_, top_;
};

TYPED_TEST_CASE(NPairImageDataLayerTest, TestDtypesAndDevices);

TYPED_TEST(NPairImageDataLayerTest, TestCreatedFromPrototxt) {
  typedef typename TypeParam::Dtype Dtype;
  const vector<int> labels = ClassLabels(vector<int>(3, 2));
  const string list = WriteList(this->dir_, labels);
  LayerParameter param;
  CHECK(google::protobuf::TextFormat::ParseFromString(
      "name: 'pk' type: 'NPairImageData' image_data_param { source: '" + list +
      "' batch_size: 6 } npair_image_data_param { classes_per_batch: 3 "
      "images_per_class: 2 seed: 4 }", &param));
  shared_ptr<Layer<Dtype> > layer = LayerRegistry<Dtype>::CreateLayer(param);
  EXPECT_STREQ("NPairImageData", layer->type());
  layer->SetUp(this->bottom_, this->top_);
  const int data_shape[] = {6, 3, 2, 3};
  EXPECT_EQ(vector<int>(data_shape, data_shape + 4), this->data_->shape());
  EXPECT_EQ(vector<int>(1, 6), this->label_->shape());
  this->ExpectPK(this->NextBatch(layer.get(), labels), labels, 3, 2);
}

TYPED_TEST(NPairImageDataLayerTest, TestDefaultsToPairs) {
  const vector<int> labels = ClassLabels(vector<int>(4, 2));
  LayerParameter param = this->Param(WriteList(this->dir_, labels), 4, 2);
  param.mutable_npair_image_data_param()->clear_images_per_class();
  param.mutable_npair_image_data_param()->clear_seed();
  const vector<vector<int> > batches = this->Draw(param, labels, 1);
  this->ExpectPK(batches[0], labels, 4, 2);
}

TYPED_TEST(NPairImageDataLayerTest, TestBalancedEpochUsesEveryImage) {
  // 6 classes x 6 images, K = 3, P = 4: 12 tuples, 3 batches, nothing waits.
  const vector<int> labels = ClassLabels(vector<int>(6, 6));
  const LayerParameter param =
      this->Param(WriteList(this->dir_, labels), 4, 3, 11);
  const vector<vector<int> > batches = this->Draw(param, labels, 4 * 3);
  for (int b = 0; b < batches.size(); ++b) {
    this->ExpectPK(batches[b], labels, 4, 3);
  }
  for (int epoch = 0; epoch < 4; ++epoch) {
    EXPECT_EQ(36, this->ExpectNoRepeat(batches, 3 * epoch, 3)) << epoch;
  }
}

TYPED_TEST(NPairImageDataLayerTest, TestBalancedEpochLeavesFewerThanPTuples) {
  // 5 classes x 5 images, K = 2: the odd image of each class and, of the 10
  // tuples, the 1 that does not fill a batch of P = 3 wait.
  const vector<int> sizes(5, 5);
  const vector<int> labels = ClassLabels(sizes);
  const int per_epoch = LongestEpoch(TuplesOf(sizes, 2), 3);
  EXPECT_EQ(3, per_epoch);
  const vector<vector<int> > batches =
      this->Draw(this->Param(WriteList(this->dir_, labels), 3, 2, 5), labels,
                 3 * per_epoch);
  for (int epoch = 0; epoch < 3; ++epoch) {
    EXPECT_EQ(per_epoch * 6,
              this->ExpectNoRepeat(batches, per_epoch * epoch, per_epoch));
  }
  for (int b = 0; b < batches.size(); ++b) {
    this->ExpectPK(batches[b], labels, 3, 2);
  }
}

TYPED_TEST(NPairImageDataLayerTest, TestUnbalancedEpochIsAsLongAsPossible) {
  // One class much larger than the others, odd counts, a class too small for
  // K = 2 (label 43), which never appears and is warned about once.
  const vector<int> sizes = {17, 2, 3, 5, 1, 4, 2, 7};
  const vector<int> labels = ClassLabels(sizes);
  const int p = 3;
  const int per_epoch = LongestEpoch(TuplesOf(sizes, 2), p);
  const LayerParameter param =
      this->Param(WriteList(this->dir_, labels), p, 2, 9);
  WarningSink sink;
  const vector<vector<int> > batches = this->Draw(param, labels, 4 * per_epoch);
  ASSERT_EQ(1, sink.warnings_.size());
  EXPECT_NE(string::npos, sink.warnings_[0].find(
      "NPairImageData Layer 'pk': 1 of 8 classes have fewer than "
      "images_per_class = 2 images and are left out; images left out: 1"))
      << sink.warnings_[0];
  int largest_class_uses = 0;
  for (int b = 0; b < batches.size(); ++b) {
    this->ExpectPK(batches[b], labels, p, 2);
    for (int i = 0; i < batches[b].size(); ++i) {
      EXPECT_NE(43, labels[batches[b][i]]);
      largest_class_uses += labels[batches[b][i]] == 3;
    }
  }
  for (int epoch = 0; epoch < 4; ++epoch) {
    EXPECT_EQ(per_epoch * p * 2,
              this->ExpectNoRepeat(batches, per_epoch * epoch, per_epoch));
  }
  // The large class gives a tuple to every batch, and over the epochs more
  // than the per_epoch * 2 images one epoch can take of it.
  EXPECT_EQ(4 * per_epoch * 2, largest_class_uses);
  std::set<int> largest_seen;
  for (int b = 0; b < batches.size(); ++b) {
    for (int i = 0; i < batches[b].size(); ++i) {
      if (labels[batches[b][i]] == 3) largest_seen.insert(batches[b][i]);
    }
  }
  EXPECT_GT(largest_seen.size(), per_epoch * 2);
}

TYPED_TEST(NPairImageDataLayerTest, TestLargeClassSpreadOverTheEpoch) {
  // Label 3 has 6 tuples, 40 classes have 1: an epoch is 11 batches of P = 4,
  // label 3 in 6 of them. Filling batches from the fullest class first would
  // put it in the first 6 every time; the batch order is drawn as well.
  vector<int> sizes(41, 2);
  sizes[0] = 12;
  const vector<int> labels = ClassLabels(sizes);
  const int per_epoch = LongestEpoch(TuplesOf(sizes, 2), 4);
  ASSERT_EQ(11, per_epoch);
  const int epochs = 20;
  const vector<vector<int> > batches =
      this->Draw(this->Param(WriteList(this->dir_, labels), 4, 2, 2), labels,
                 epochs * per_epoch);
  vector<int> at_position(per_epoch, 0);
  for (int b = 0; b < batches.size(); ++b) {
    for (int i = 0; i < batches[b].size(); ++i) {
      at_position[b % per_epoch] += labels[batches[b][i]] == 3;
    }
  }
  for (int position = 0; position < per_epoch; ++position) {
    EXPECT_GT(at_position[position], 0) << "batch " << position;
  }
  EXPECT_EQ(epochs * 6 * 2,
            std::accumulate(at_position.begin(), at_position.end(), 0));
}

TYPED_TEST(NPairImageDataLayerTest, TestEpochsAreRedrawn) {
  const vector<int> sizes(6, 4);
  const vector<int> labels = ClassLabels(sizes);
  const int per_epoch = LongestEpoch(TuplesOf(sizes, 2), 3);
  const vector<vector<int> > batches =
      this->Draw(this->Param(WriteList(this->dir_, labels), 3, 2, 1), labels,
                 2 * per_epoch);
  const vector<vector<int> > first(batches.begin(),
                                   batches.begin() + per_epoch);
  const vector<vector<int> > second(batches.begin() + per_epoch,
                                    batches.end());
  EXPECT_NE(first, second);
  // Not just the batch order: the pairs and the class groupings change.
  std::set<std::set<int> > first_pairs, second_pairs;
  for (int b = 0; b < per_epoch; ++b) {
    for (int j = 0; j < 3; ++j) {
      first_pairs.insert(std::set<int>(first[b].begin() + 2 * j,
                                       first[b].begin() + 2 * j + 2));
      second_pairs.insert(std::set<int>(second[b].begin() + 2 * j,
                                        second[b].begin() + 2 * j + 2));
    }
  }
  EXPECT_NE(first_pairs, second_pairs);
}

TYPED_TEST(NPairImageDataLayerTest, TestSeedDecidesTheOrder) {
  const vector<int> labels = ClassLabels(vector<int>(7, 5));
  const string list = WriteList(this->dir_, labels);
  const vector<vector<int> > a = this->Draw(this->Param(list, 3, 2, 42),
                                            labels, 12);
  const vector<vector<int> > again = this->Draw(this->Param(list, 3, 2, 42),
                                                labels, 12);
  const vector<vector<int> > other = this->Draw(this->Param(list, 3, 2, 43),
                                                labels, 12);
  EXPECT_EQ(a, again);
  EXPECT_NE(a, other);
  // The solver's seed changes nothing.
  Caffe::set_random_seed(1234);
  EXPECT_EQ(a, this->Draw(this->Param(list, 3, 2, 42), labels, 12));
}

TYPED_TEST(NPairImageDataLayerTest, TestSolversShareNoClass) {
  const vector<int> sizes = {9, 4, 6, 2, 5, 3, 8, 4, 2, 6};
  const vector<int> labels = ClassLabels(sizes);
  const string list = WriteList(this->dir_, labels);
  const int solvers = 3, p = 2, k = 2;
  const int steps = LongestEpoch(TuplesOf(sizes, k), solvers * p);
  vector<vector<vector<int> > > by_solver;
  for (int rank = 0; rank < solvers; ++rank) {
    SolverGuard guard(solvers, rank);
    by_solver.push_back(this->Draw(this->Param(list, p, k, 3), labels,
                                   3 * steps));
  }
  for (int t = 0; t < 3 * steps; ++t) {
    std::set<int> classes, images;
    for (int rank = 0; rank < solvers; ++rank) {
      const vector<int>& batch = by_solver[rank][t];
      this->ExpectPK(batch, labels, p, k);
      for (int i = 0; i < batch.size(); ++i) {
        classes.insert(labels[batch[i]]);
        images.insert(batch[i]);
      }
    }
    EXPECT_EQ(solvers * p, classes.size()) << "iteration " << t;
    EXPECT_EQ(solvers * p * k, images.size()) << "iteration " << t;
  }
  for (int epoch = 0; epoch < 3; ++epoch) {
    vector<vector<int> > together;
    for (int rank = 0; rank < solvers; ++rank) {
      together.insert(together.end(), by_solver[rank].begin() + epoch * steps,
                      by_solver[rank].begin() + (epoch + 1) * steps);
    }
    EXPECT_EQ(solvers * steps * p * k,
              this->ExpectNoRepeat(together, 0, together.size()));
  }
  // A TEST net is not split: it reads as a single solver's would.
  const vector<vector<int> > single =
      this->Draw(this->Param(list, p, k, 3), labels, 5);
  SolverGuard guard(solvers, 0);
  LayerParameter test_param = this->Param(list, p, k, 3);
  test_param.set_phase(TEST);
  EXPECT_EQ(single, this->Draw(test_param, labels, 5));
}

TYPED_TEST(NPairImageDataLayerTest, TestResizeAndGray) {
  const vector<int> labels = ClassLabels(vector<int>(2, 2));
  LayerParameter param = this->Param(WriteList(this->dir_, labels), 2, 2);
  param.mutable_image_data_param()->set_new_height(5);
  param.mutable_image_data_param()->set_new_width(4);
  param.mutable_image_data_param()->set_is_color(false);
  NPairImageDataLayer<typename TypeParam::Dtype> layer(param);
  layer.SetUp(this->bottom_, this->top_);
  const int shape[] = {4, 1, 5, 4};
  EXPECT_EQ(vector<int>(shape, shape + 4), this->data_->shape());
  layer.Forward(this->bottom_, this->top_);
  EXPECT_EQ(vector<int>(shape, shape + 4), this->data_->shape());
}

// Set-up errors name the layer and, for the list, the line.
template <typename Dtype>
class NPairImageDataLayerDeathTest : public ::testing::Test {
 protected:
  NPairImageDataLayerDeathTest() : data_(new Blob<Dtype>()),
                                   label_(new Blob<Dtype>()) {
    ::testing::FLAGS_gtest_death_test_style = "threadsafe";
    MakeTempDir(&dir_);
    top_.push_back(data_.get());
    top_.push_back(label_.get());
  }
  // A list of lines as given, after two good classes of two images each.
  string List(const vector<string>& lines) {
    string list;
    MakeTempFilename(&list);
    std::ofstream out(list.c_str());
    for (int i = 0; i < 4; ++i) {
      out << WriteImage(dir_, i) << " " << i / 2 << "\n";
    }
    for (int i = 0; i < lines.size(); ++i) {
      out << lines[i] << "\n";
    }
    return list;
  }
  LayerParameter Param(const string& list, int p = 2) {
    LayerParameter param;
    param.set_name("pk");
    param.mutable_image_data_param()->set_source(list);
    param.mutable_npair_image_data_param()->set_classes_per_batch(p);
    return param;
  }
  void SetUp(const LayerParameter& param) {
    NPairImageDataLayer<Dtype> layer(param);
    layer.SetUp(bottom_, top_);
    for (int b = 0; b < 8; ++b) {
      layer.Forward(bottom_, top_);
    }
  }
  string dir_;
  shared_ptr<Blob<Dtype> > data_, label_;
  vector<Blob<Dtype>*> bottom_, top_;
};

TYPED_TEST_CASE(NPairImageDataLayerDeathTest, TestDtypes);

TYPED_TEST(NPairImageDataLayerDeathTest, TestMissingList) {
  EXPECT_DEATH(this->SetUp(this->Param(this->dir_ + "/no-such-list.txt")),
               "NPairImageData Layer 'pk': cannot open the image list '.*"
               "no-such-list.txt' \\(image_data_param.source\\)");
}

TYPED_TEST(NPairImageDataLayerDeathTest, TestMissingImageFile) {
  const string list = this->List(vector<string>(1, this->dir_ + "/gone.png 1"));
  EXPECT_DEATH(this->SetUp(this->Param(list)),
               "NPairImageData Layer 'pk': .* line 5: no image file "
               "'.*gone.png'");
}

TYPED_TEST(NPairImageDataLayerDeathTest, TestMalformedLines) {
  const string image = WriteImage(this->dir_, 9);
  const string bad[] = {image, image + " x", image + " 1.5",
                        image + " 99999999999", " 1", "7"};
  for (int i = 0; i < 6; ++i) {
    vector<string> lines;
    lines.push_back("");  // blank lines are skipped, but counted
    lines.push_back(" \t");
    lines.push_back(bad[i]);
    EXPECT_DEATH(this->SetUp(this->Param(this->List(lines))),
                 "NPairImageData Layer 'pk': .* line 7: expected 'path label' "
                 "with an integer label, got '") << bad[i];
  }
  vector<string> good(1, "");
  good.push_back(image + " 1\r");  // a list written on Windows
  this->SetUp(this->Param(this->List(good)));
}

TYPED_TEST(NPairImageDataLayerDeathTest, TestUnreadableImage) {
  const string text = this->dir_ + "/not-an-image.png";
  std::ofstream(text.c_str()) << "not a PNG";
  const string list = this->List(vector<string>(1, text + " 2"));
  LayerParameter param = this->Param(list, 3);
  param.mutable_npair_image_data_param()->set_images_per_class(1);
  EXPECT_DEATH(this->SetUp(param), "NPairImageData Layer 'pk': .* line 5: "
               "cannot read '.*not-an-image.png' as an image");
}

TYPED_TEST(NPairImageDataLayerDeathTest, TestImagesOfDifferentSizes) {
  const string big = this->dir_ + "/big.png";
  cv::imwrite(big, cv::Mat(4, 4, CV_8UC3, cv::Scalar(1, 2, 3)));
  vector<string> lines(1, big + " 0");
  LayerParameter param = this->Param(this->List(lines), 2);
  param.mutable_npair_image_data_param()->set_images_per_class(1);
  // Whichever of the two sizes comes first in the batch, the other is named.
  EXPECT_DEATH(this->SetUp(param), "NPairImageData Layer 'pk': .* line [1-5]: "
               "'.*png' is [24] x [34] pixels, the batch's first image [24] x "
               "[34]: give every image one size with "
               "image_data_param.new_height and new_width");
}

TYPED_TEST(NPairImageDataLayerDeathTest, TestListWithoutImages) {
  string list;
  MakeTempFilename(&list);
  std::ofstream(list.c_str()) << "\n  \n";
  EXPECT_DEATH(this->SetUp(this->Param(list)), "NPairImageData Layer 'pk': "
               "the image list '.*' names no image");
  EXPECT_DEATH(this->SetUp(this->Param("")), "NPairImageData Layer 'pk': "
               "image_data_param.source \\(the image list\\) must be set");
}

TYPED_TEST(NPairImageDataLayerDeathTest, TestTooFewClasses) {
  // Two classes of two images and one of a single image, for P = 3.
  const string list = this->List(vector<string>(
      1, WriteImage(this->dir_, 7) + " 5"));
  EXPECT_DEATH(this->SetUp(this->Param(list, 3)),
               "NPairImageData Layer 'pk': the list has 2 classes with at "
               "least images_per_class = 2 images, but a batch needs "
               "classes_per_batch = 3 distinct classes");
  SolverGuard guard(2, 1);
  EXPECT_DEATH(this->SetUp(this->Param(list, 2)),
               "NPairImageData Layer 'pk': the list has 2 classes with at "
               "least images_per_class = 2 images, but a batch needs "
               "classes_per_batch = 2 distinct classes on each of 2 solvers, "
               "4 in all");
}

TYPED_TEST(NPairImageDataLayerDeathTest, TestBadParameters) {
  const string list = this->List(vector<string>());
  LayerParameter unset = this->Param(list);
  unset.mutable_npair_image_data_param()->clear_classes_per_batch();
  EXPECT_DEATH(this->SetUp(unset), "NPairImageData Layer 'pk': "
               "npair_image_data_param.classes_per_batch \\(P, the classes of "
               "a batch\\) must be set to a positive number");
  LayerParameter zero_k = this->Param(list);
  zero_k.mutable_npair_image_data_param()->set_images_per_class(0);
  EXPECT_DEATH(this->SetUp(zero_k), "NPairImageData Layer 'pk': "
               "npair_image_data_param.images_per_class \\(K\\) must be "
               "positive");
  LayerParameter batch = this->Param(list);
  batch.mutable_image_data_param()->set_batch_size(5);
  EXPECT_DEATH(this->SetUp(batch), "NPairImageData Layer 'pk': "
               "image_data_param.batch_size is 5, but batches are "
               "classes_per_batch x images_per_class = 4 images");
  LayerParameter shuffle = this->Param(list);
  shuffle.mutable_image_data_param()->set_shuffle(true);
  EXPECT_DEATH(this->SetUp(shuffle), "NPairImageData Layer 'pk': "
               "image_data_param.shuffle and rand_skip do not apply");
  LayerParameter size = this->Param(list);
  size.mutable_image_data_param()->set_new_height(8);
  EXPECT_DEATH(this->SetUp(size), "NPairImageData Layer 'pk': set "
               "image_data_param.new_height and new_width together");
  LayerParameter right = this->Param(list);
  right.mutable_image_data_param()->set_batch_size(4);
  right.mutable_image_data_param()->set_shuffle(false);
  this->SetUp(right);
}

}  // namespace caffe
#endif  // USE_OPENCV
