#ifdef USE_OPENCV
#include <opencv2/core/core.hpp>

#include <boost/filesystem.hpp>
#include <boost/random/uniform_int.hpp>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <fstream>  // NOLINT(readability/streams)
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "caffe/layers/npair_image_data_layer.hpp"
#include "caffe/util/io.hpp"
#include "caffe/util/rng.hpp"

namespace caffe {

namespace {

// A uniform index into [0, n), from the layer's stream (boost's distribution,
// so that every platform draws the same plan from the same seed).
int RandomIndex(int n, rng_t* rng) {
  boost::uniform_int<int> dist(0, n - 1);
  return dist(*rng);
}

// Parses "path label" (the label after the last space); false if malformed.
bool ParseListLine(const string& line, string* path, int* label) {
  const size_t space = line.find_last_of(' ');
  if (space == string::npos || space == 0 || space + 1 == line.size()) {
    return false;
  }
  const char* text = line.c_str() + space + 1;
  char* end = NULL;
  errno = 0;
  const long value = strtol(text, &end, 10);  // NOLINT(runtime/int)
  if (*end != '\0' || errno != 0 || value < INT_MIN || value > INT_MAX) {
    return false;
  }
  *path = line.substr(0, space);
  *label = static_cast<int>(value);
  return true;
}

// Reads a list image as ImageData does, with the list's line on failure.
cv::Mat ReadListImage(const ImageDataParameter& param,
    const string& path, int line, const string& who) {
  const string file = param.root_folder() + path;
  cv::Mat image = ReadImageToCVMat(file, param.new_height(), param.new_width(),
                                   param.is_color());
  CHECK(image.data) << who << ": " << param.source() << " line " << line
      << ": cannot read '" << file << "' as an image";
  return image;
}

}  // namespace

template <typename Dtype>
NPairImageDataLayer<Dtype>::~NPairImageDataLayer() {
  this->StopInternalThread();
}

template <typename Dtype>
string NPairImageDataLayer<Dtype>::Who() const {
  const string& name = this->layer_param_.name();
  return string(type()) + " Layer" + (name.empty() ? "" : " '" + name + "'");
}

template <typename Dtype>
void NPairImageDataLayer<Dtype>::CheckParameters() const {
  const NPairImageDataParameter& npair =
      this->layer_param_.npair_image_data_param();
  const ImageDataParameter& image = this->layer_param_.image_data_param();
  CHECK(npair.classes_per_batch() > 0 && npair.classes_per_batch() <= INT_MAX)
      << Who() << ": npair_image_data_param.classes_per_batch (P, the classes "
      "of a batch) must be set to a positive number";
  CHECK(npair.images_per_class() > 0 && npair.images_per_class() <= INT_MAX)
      << Who() << ": npair_image_data_param.images_per_class (K) must be "
      "positive";
  const int64_t batch_size = static_cast<int64_t>(npair.classes_per_batch()) *
                             npair.images_per_class();
  CHECK(!image.has_batch_size() || image.batch_size() == batch_size)
      << Who() << ": image_data_param.batch_size is " << image.batch_size()
      << ", but batches are classes_per_batch x images_per_class = "
      << batch_size << " images: leave batch_size unset or make it that";
  CHECK(!image.shuffle() && image.rand_skip() == 0) << Who()
      << ": image_data_param.shuffle and rand_skip do not apply: the layer "
      "draws its own order each epoch (npair_image_data_param.seed)";
  CHECK((image.new_height() == 0) == (image.new_width() == 0)) << Who()
      << ": set image_data_param.new_height and new_width together";
  CHECK(!image.source().empty()) << Who()
      << ": image_data_param.source (the image list) must be set";
}

template <typename Dtype>
void NPairImageDataLayer<Dtype>::ReadList() {
  const string& source = this->layer_param_.image_data_param().source();
  const string& root = this->layer_param_.image_data_param().root_folder();
  std::ifstream list(source.c_str());
  CHECK(list.is_open()) << Who() << ": cannot open the image list '" << source
      << "' (image_data_param.source)";
  string line;
  for (int number = 1; std::getline(list, line); ++number) {
    const size_t last = line.find_last_not_of(" \t\r");
    if (last == string::npos) {
      continue;
    }
    line.erase(last + 1);
    ListImage image;
    image.line = number;
    CHECK(ParseListLine(line, &image.path, &image.label)) << Who() << ": "
        << source << " line " << number << ": expected 'path label' with an "
        "integer label, got '" << line << "'";
    boost::system::error_code error;
    CHECK(boost::filesystem::is_regular_file(root + image.path, error))
        << Who() << ": " << source << " line " << number << ": no image file '"
        << root + image.path << "'";
    images_.push_back(image);
  }
  CHECK(!images_.empty()) << Who() << ": the image list '" << source
      << "' names no image";
}

template <typename Dtype>
void NPairImageDataLayer<Dtype>::GroupClasses() {
  std::map<int, vector<int> > by_label;
  for (int i = 0; i < images_.size(); ++i) {
    by_label[images_[i].label].push_back(i);
  }
  int skipped = 0, skipped_images = 0;
  for (std::map<int, vector<int> >::const_iterator it = by_label.begin();
       it != by_label.end(); ++it) {
    if (it->second.size() >= images_per_class_) {
      classes_.push_back(it->second);
    } else {
      ++skipped;
      skipped_images += it->second.size();
    }
  }
  LOG_IF(WARNING, skipped > 0 && Caffe::root_solver()) << Who() << ": "
      << skipped << " of " << by_label.size() << " classes have fewer than "
      "images_per_class = " << images_per_class_ << " images and are left out; "
      "images left out: " << skipped_images;
  const int needed = solver_count_ * classes_per_batch_;
  std::ostringstream per_solver;
  if (solver_count_ > 1) {
    per_solver << " on each of " << solver_count_ << " solvers, " << needed
               << " in all";
  }
  CHECK(classes_.size() >= needed) << Who() << ": the list has "
      << classes_.size() << " classes with at least images_per_class = "
      << images_per_class_ << " images, but a batch needs classes_per_batch = "
      << classes_per_batch_ << " distinct classes" << per_solver.str();
}

template <typename Dtype>
void NPairImageDataLayer<Dtype>::DrawEpoch() {
  rng_t* rng = static_cast<rng_t*>(rng_->generator());
  const int per_class = images_per_class_;
  const int step_size = solver_count_ * classes_per_batch_;
  // 1. Every class's images in a fresh order, to be read off K at a time;
  // classes filed by how many tuples they have left.
  vector<vector<int> > order(classes_);
  vector<int> tuples_left(order.size());
  std::map<int, vector<int>, std::greater<int> > by_tuples_left;
  for (int c = 0; c < order.size(); ++c) {
    shuffle(order[c].begin(), order[c].end(), rng);
    tuples_left[c] = order[c].size() / per_class;
    by_tuples_left[tuples_left[c]].push_back(c);
  }
  // 2. Steps of the fullest classes, drawn at random among equally full ones.
  int classes_left = order.size();
  vector<vector<int> > steps;
  while (classes_left >= step_size) {
    vector<int> step;
    while (step.size() < step_size) {
      vector<int>& fullest = by_tuples_left.begin()->second;
      const int wanted = step_size - step.size();
      if (fullest.size() <= wanted) {
        step.insert(step.end(), fullest.begin(), fullest.end());
        by_tuples_left.erase(by_tuples_left.begin());
      } else {
        for (int i = 0; i < wanted; ++i) {
          std::swap(fullest[RandomIndex(fullest.size(), rng)], fullest.back());
          step.push_back(fullest.back());
          fullest.pop_back();
        }
      }
    }
    for (int i = 0; i < step.size(); ++i) {
      const int c = step[i];
      if (--tuples_left[c] > 0) {
        by_tuples_left[tuples_left[c]].push_back(c);
      } else {
        --classes_left;
      }
    }
    steps.push_back(step);
  }
  // 3. The steps in random order; each class gives its tuples in turn, and
  // this solver keeps its own P classes of each step.
  shuffle(steps.begin(), steps.end(), rng);
  vector<int> next(order.size(), 0);
  epoch_.clear();
  for (int s = 0; s < steps.size(); ++s) {
    shuffle(steps[s].begin(), steps[s].end(), rng);
    for (int slot = 0; slot < step_size; ++slot) {
      const int c = steps[s][slot];
      if (slot / classes_per_batch_ == solver_rank_) {
        epoch_.insert(epoch_.end(), order[c].begin() + next[c],
                      order[c].begin() + next[c] + per_class);
      }
      next[c] += per_class;
    }
  }
  epoch_pos_ = 0;
  ++epoch_number_;
  LOG_IF(INFO, Caffe::root_solver()) << Who() << ": epoch " << epoch_number_
      << ": " << steps.size() << " batches of " << classes_per_batch_ << " x "
      << per_class << (solver_count_ > 1 ? " per solver" : "") << ", using "
      << steps.size() * step_size * per_class << " of " << images_.size()
      << " images";
}

// NOLINT below: cpp_lint's caffe/data_layer_setup rule lists BVLC's own layers.
template <typename Dtype>
void NPairImageDataLayer<Dtype>::DataLayerSetUp(  // NOLINT
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  CheckParameters();
  const NPairImageDataParameter& npair =
      this->layer_param_.npair_image_data_param();
  classes_per_batch_ = npair.classes_per_batch();
  images_per_class_ = npair.images_per_class();
  // As Caffe's Data layer does: only TRAIN nets are replicated per solver.
  const bool split = this->phase_ == TRAIN;
  solver_count_ = split ? Caffe::solver_count() : 1;
  solver_rank_ = split ? Caffe::solver_rank() : 0;
  ReadList();
  GroupClasses();
  LOG_IF(INFO, Caffe::root_solver()) << Who() << ": " << images_.size()
      << " images, " << classes_.size() << " classes of at least "
      << images_per_class_ << "; batches of " << classes_per_batch_ << " x "
      << images_per_class_ << ", drawn for " << solver_count_ << " solver(s)";
  rng_.reset(new Caffe::RNG(npair.seed()));
  epoch_number_ = 0;
  DrawEpoch();

  const ListImage& first = images_[epoch_[0]];
  cv::Mat cv_img = ReadListImage(this->layer_param_.image_data_param(),
                                 first.path, first.line, Who());
  vector<int> top_shape = this->data_transformer_->InferBlobShape(cv_img);
  this->transformed_data_.Reshape(top_shape);
  const int batch_size = classes_per_batch_ * images_per_class_;
  top_shape[0] = batch_size;
  top[0]->Reshape(top_shape);
  const vector<int> label_shape(1, batch_size);
  top[1]->Reshape(label_shape);
  for (int i = 0; i < this->prefetch_.size(); ++i) {
    this->prefetch_[i]->data_.Reshape(top_shape);
    this->prefetch_[i]->label_.Reshape(label_shape);
  }
  LOG_IF(INFO, Caffe::root_solver()) << Who() << ": output data size "
      << top[0]->shape_string();
}

// Called on the prefetch thread.
template <typename Dtype>
void NPairImageDataLayer<Dtype>::load_batch(Batch<Dtype>* batch) {
  const ImageDataParameter& param = this->layer_param_.image_data_param();
  const int batch_size = classes_per_batch_ * images_per_class_;
  if (epoch_pos_ == epoch_.size()) {
    DrawEpoch();
  }
  const int* batch_images = &epoch_[epoch_pos_];
  epoch_pos_ += batch_size;

  const int crop = this->layer_param_.transform_param().crop_size();
  cv::Mat first;
  Dtype* data = NULL;
  Dtype* label = batch->label_.mutable_cpu_data();
  for (int item = 0; item < batch_size; ++item) {
    const ListImage& image = images_[batch_images[item]];
    const cv::Mat cv_img = ReadListImage(param, image.path, image.line, Who());
    if (item == 0) {
      first = cv_img;
      vector<int> shape = this->data_transformer_->InferBlobShape(cv_img);
      this->transformed_data_.Reshape(shape);
      shape[0] = batch_size;
      batch->data_.Reshape(shape);
      data = batch->data_.mutable_cpu_data();
    }
    // The transformer would copy a corner of a larger image without a word.
    if (crop) {
      CHECK(cv_img.rows >= crop && cv_img.cols >= crop) << Who() << ": "
          << param.source() << " line " << image.line << ": '" << image.path
          << "' is " << cv_img.rows << " x " << cv_img.cols << " pixels, "
          "smaller than transform_param.crop_size = " << crop;
    } else {
      CHECK(cv_img.rows == first.rows && cv_img.cols == first.cols) << Who()
          << ": " << param.source() << " line " << image.line << ": '"
          << image.path << "' is " << cv_img.rows << " x " << cv_img.cols
          << " pixels, the batch's first image " << first.rows << " x "
          << first.cols << ": give every image one size with "
          "image_data_param.new_height and new_width";
    }
    this->transformed_data_.set_cpu_data(data + batch->data_.offset(item));
    this->data_transformer_->Transform(cv_img, &this->transformed_data_);
    label[item] = image.label;
  }
}

INSTANTIATE_CLASS(NPairImageDataLayer);
REGISTER_LAYER_CLASS(NPairImageData);

}  // namespace caffe
#endif  // USE_OPENCV
