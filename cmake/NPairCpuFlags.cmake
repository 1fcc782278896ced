# Compile flags of our CPU sources.
#
# OpenMP for the N-pair loss's passes over rows: only the sources that hold
# them are compiled with it (the rest of Caffe keeps its own flags, and
# Caffe's USE_OPENMP stays off); libcaffe and the gtests link the OpenMP
# runtime. The thread count is OpenMP's: OMP_NUM_THREADS, else one per core.
#
# No floating-point contraction in the row passes: the passes are compiled
# once per vector width (npair_row_kernels.cpp), and a fused multiply-add
# where a wider target has one would round differently from the baseline.
# The layer and the miner follow the same rule, so that every CPU, whatever
# its instruction set, follows one recipe.
#
# Our private headers (src/caffe/util/npair_*.hpp, linked into Caffe's src/
# by the overlay) are included as "caffe/util/...", like Caffe's own.
enable_language(CXX)  # FindOpenMP tries the compiler of this directory
find_package(OpenMP REQUIRED COMPONENTS CXX)
separate_arguments(npair_openmp_flags NATIVE_COMMAND "${OpenMP_CXX_FLAGS}")
set(npair_openmp_sources
    src/caffe/layers/npair_multiclass_loss_layer.cpp
    src/caffe/util/npair_miner.cpp)
set(npair_exact_sources
    ${npair_openmp_sources}
    src/caffe/util/npair_row_kernels.cpp)
foreach(f IN LISTS npair_exact_sources)
  set(options -ffp-contract=off)
  if(f IN_LIST npair_openmp_sources)
    list(APPEND options ${npair_openmp_flags})
  endif()
  set_source_files_properties("${CAFFE_WORK_DIR}/${f}" TARGET_DIRECTORY caffe
                              PROPERTIES COMPILE_OPTIONS "${options}")
endforeach()
target_link_libraries(caffe PRIVATE ${OpenMP_CXX_LIBRARIES})
target_include_directories(caffe PRIVATE "${CAFFE_WORK_DIR}/src")

# The gtests set the thread count themselves (omp_set_num_threads).
target_link_libraries(test.testbin OpenMP::OpenMP_CXX)
target_include_directories(test.testbin PRIVATE "${CAFFE_WORK_DIR}/src")
