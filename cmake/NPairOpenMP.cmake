# OpenMP for NPairMultiClassLoss's CPU passes. Only that layer's source is
# compiled with it (the rest of Caffe keeps its own flags, and Caffe's
# USE_OPENMP stays off); libcaffe and our gtests link the OpenMP runtime. The
# thread count is OpenMP's: OMP_NUM_THREADS, else one per core.
#
# Our private headers (src/caffe/util/npair_*.hpp, linked into Caffe's src/
# by the overlay) are included as "caffe/util/...", like Caffe's own.
enable_language(CXX)  # FindOpenMP tries the compiler of this directory
find_package(OpenMP REQUIRED COMPONENTS CXX)
separate_arguments(npair_openmp_flags NATIVE_COMMAND "${OpenMP_CXX_FLAGS}")
set_source_files_properties(
  "${CAFFE_WORK_DIR}/src/caffe/layers/npair_multiclass_loss_layer.cpp"
  TARGET_DIRECTORY caffe
  PROPERTIES COMPILE_OPTIONS "${npair_openmp_flags}")
target_link_libraries(caffe PRIVATE ${OpenMP_CXX_LIBRARIES})
target_include_directories(caffe PRIVATE "${CAFFE_WORK_DIR}/src")

# The gtests set the thread count themselves (omp_set_num_threads).
target_link_libraries(test.testbin OpenMP::OpenMP_CXX)
target_include_directories(test.testbin PRIVATE "${CAFFE_WORK_DIR}/src")
