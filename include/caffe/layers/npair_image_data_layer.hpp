#ifndef CAFFE_NPAIR_IMAGE_DATA_LAYER_HPP_
#define CAFFE_NPAIR_IMAGE_DATA_LAYER_HPP_

#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layers/base_data_layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * @brief Image batches of P classes x K images each, regrouped in memory every
 *        epoch: the batches of the N-pair loss (K = 2) and of other
 *        metric-learning losses, from a plain image list.
 *
 * Parameters:
 *   - image_data_param: source (the list), root_folder, new_height and
 *     new_width, is_color, exactly as ImageData reads them; batch_size left
 *     unset or equal to P x K. shuffle and rand_skip do not apply (the layer
 *     draws its own order) and are refused.
 *   - transform_param: applied to every image as ImageData applies it.
 *   - npair_image_data_param: classes_per_batch (P, required),
 *     images_per_class (K, default 2), seed (default 0).
 *
 * Tops: data, (P K) x C x H x W; label, P K values, each image's label as the
 * list gives it. Rows jK .. jK + K - 1 hold K images of one class, and the P
 * classes of a batch are distinct, in random order. There is no third top with
 * the class's slot in the batch: the losses compare labels for equality, and
 * the slot of row i is floor(i / K).
 *
 * The list: one image per line, its path (spaces allowed) and an integer label
 * after the line's last space; blank lines are ignored. Set-up stops, naming
 * the list and the line, at a line without an integer label or whose path is
 * not a file (every line is checked before training starts); an image that
 * cannot be decoded stops the run when it is read, naming its line too. Each
 * batch takes its shape from its first image, as ImageData's does; every other
 * image of the batch must have that size, or at least crop_size with a crop.
 *
 * Classes are the distinct labels. A class with fewer than K images is left
 * out, with one warning that counts such classes and their images. Set-up
 * fails unless at least P classes remain (R x P with R solvers, below).
 *
 * Each epoch is drawn afresh from the layer's random stream:
 *  1. every class's images are shuffled and cut into floor(n / K) tuples of
 *     K; the n mod K images left over sit the epoch out (the next epoch's
 *     shuffle draws them afresh);
 *  2. batches are formed one at a time from the P classes with the most tuples
 *     left, ties broken at random, each giving its next tuple, until fewer than
 *     P classes have a tuple left. Taking the fullest classes first makes the
 *     epoch as long as any grouping into batches of P distinct classes can be:
 *     the largest B with sum over classes of min(t_c, B) >= P B, where t_c is
 *     class c's number of tuples;
 *  3. the batches are put in random order, so that a class with many tuples is
 *     spread over the epoch rather than filling its first batches.
 * Every image is used at most once per epoch. With C classes of t tuples each
 * an epoch is floor(C t / P) batches and fewer than P tuples wait, besides the
 * n mod K images. A class with many more images than the others gives at most
 * one tuple to each of the B batches; the images it has beyond those wait, and
 * the next epoch's shuffle chooses again which of them are used.
 *
 * Several solvers (Caffe::solver_count() = R > 1 in the TRAIN phase, as in
 * `caffe train -gpu all`): each solver's layer draws the same plan, with steps
 * of R P distinct classes in place of batches of P (in 2 and 3 above), and
 * solver r takes classes rP .. rP + P - 1 of each step, which are in random
 * order. Guaranteed, when every solver has the same list, P, K and seed (true
 * of one net replicated by Caffe):
 *  - the n-th batches of the R solvers hold R P distinct classes, so no class
 *    and no image is on two solvers. Caffe's synchronous solvers all run the
 *    same forwards, so these are the batches of one iteration;
 *  - over an epoch the solvers together use every image at most once;
 *  - every solver's epoch has the same number of batches, each a P x K batch.
 * Set-up fails unless the list has R P usable classes. The TEST phase is never
 * split: only the root solver tests.
 *
 * The batches depend only on the list, P, K, R and seed: the same seed gives
 * the same batches in every run (the solver's random_seed changes only
 * transform_param's crops and mirrors). A run resumed from a snapshot starts
 * again at the first epoch.
 */
template <typename Dtype>
class NPairImageDataLayer : public BasePrefetchingDataLayer<Dtype> {
 public:
  explicit NPairImageDataLayer(const LayerParameter& param)
      : BasePrefetchingDataLayer<Dtype>(param) {}
  virtual ~NPairImageDataLayer();
  virtual void DataLayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "NPairImageData"; }
  virtual inline int ExactNumBottomBlobs() const { return 0; }
  virtual inline int ExactNumTopBlobs() const { return 2; }

 protected:
  struct ListImage {
    std::string path;  // as the list gives it, before root_folder
    int label;
    int line;          // 1-based, for error messages
  };

  virtual void load_batch(Batch<Dtype>* batch);
  void CheckParameters() const;
  void ReadList();
  void GroupClasses();
  void DrawEpoch();
  // "NPairImageData Layer 'name'", the prefix of every message.
  std::string Who() const;

  int classes_per_batch_;
  int images_per_class_;
  int solver_count_;  // R: the solvers that share the plan (1 outside TRAIN)
  int solver_rank_;
  vector<ListImage> images_;
  vector<vector<int> > classes_;  // usable classes, as indices into images_
  shared_ptr<Caffe::RNG> rng_;
  vector<int> epoch_;  // this solver's images for the epoch, batch by batch
  int epoch_pos_;
  int epoch_number_;
};

}  // namespace caffe

#endif  // CAFFE_NPAIR_IMAGE_DATA_LAYER_HPP_
