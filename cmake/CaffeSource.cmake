# Where the Caffe source comes from, and the working copy we build from.
#
# CAFFE_SOURCE_DIR names a user's own Caffe checkout; left empty, Debian's source
# package `caffe` is fetched once into the build directory. Either way the tree is
# copied to CAFFE_WORK_DIR before our patches and files are applied to it, so a
# user's checkout is never modified.

set(CAFFE_SOURCE_DIR "" CACHE PATH
    "A Caffe source tree to build instead of Debian's caffe source package")

if(CAFFE_SOURCE_DIR)
  set(caffe_pristine_dir "${CAFFE_SOURCE_DIR}")
else()
  set(caffe_pristine_dir "${CMAKE_BINARY_DIR}/caffe-debian")
  execute_process(
    COMMAND bash "${PROJECT_SOURCE_DIR}/scripts/fetch_caffe_source.sh" "${caffe_pristine_dir}"
    RESULT_VARIABLE fetch_result)
  if(NOT fetch_result EQUAL 0)
    message(FATAL_ERROR "Could not fetch Caffe's source (see above). "
                        "Set -DCAFFE_SOURCE_DIR=/path/to/caffe to use your own checkout.")
  endif()
endif()

if(NOT EXISTS "${caffe_pristine_dir}/src/caffe/proto/caffe.proto")
  message(FATAL_ERROR "${caffe_pristine_dir} is not a Caffe source tree "
                      "(no src/caffe/proto/caffe.proto)")
endif()

set(CAFFE_WORK_DIR "${CMAKE_BINARY_DIR}/caffe-src")
