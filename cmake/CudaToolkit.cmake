# CAFFE_NPAIR_CUDA=ON: Caffe's own CUDA build (FindCUDA, cuda_compile) set up for
# the CUDA toolkit on this machine (CUDA 13 tested; patches/1*-cuda13-*.patch make
# Caffe's sources and cmake/Cuda.cmake build with it).
#
#   CAFFE_NPAIR_CUDA_ARCH  compute capabilities to build machine code for
#                          ("80 90": A100, H100); PTX of the highest is embedded
#                          too, so newer GPUs can run it after a JIT compile.
#   CUDA_TOOLKIT_ROOT_DIR  the toolkit (default: the nvcc on PATH, else /usr/local/cuda).
#
# cuDNN stays off: Caffe's cuDNN layers use the cuDNN 7 API, which cuDNN 9 removed.

find_program(CAFFE_NPAIR_NVCC nvcc HINTS "${CUDA_TOOLKIT_ROOT_DIR}/bin" /usr/local/cuda/bin)
if(NOT CAFFE_NPAIR_NVCC)
  message(FATAL_ERROR "CAFFE_NPAIR_CUDA=ON but no nvcc was found: put the CUDA toolkit's "
                      "bin/ on PATH or pass -DCUDA_TOOLKIT_ROOT_DIR=/path/to/cuda")
endif()
if(NOT CUDA_TOOLKIT_ROOT_DIR)
  get_filename_component(cuda_bin_dir "${CAFFE_NPAIR_NVCC}" DIRECTORY)
  get_filename_component(cuda_root "${cuda_bin_dir}" DIRECTORY)
  set(CUDA_TOOLKIT_ROOT_DIR "${cuda_root}" CACHE PATH "The CUDA toolkit" FORCE)
endif()

string(REGEX MATCHALL "[0-9]+" cuda_archs "${CAFFE_NPAIR_CUDA_ARCH}")
if(NOT cuda_archs)
  message(FATAL_ERROR "CAFFE_NPAIR_CUDA_ARCH='${CAFFE_NPAIR_CUDA_ARCH}' names no compute capability")
endif()
list(SORT cuda_archs COMPARE NATURAL)
list(GET cuda_archs -1 cuda_ptx_arch)

set(CPU_ONLY OFF CACHE BOOL "" FORCE)
set(CUDA_ARCH_NAME "Manual" CACHE STRING "" FORCE)
set(CUDA_ARCH_BIN "${CAFFE_NPAIR_CUDA_ARCH}" CACHE STRING "" FORCE)
set(CUDA_ARCH_PTX "${cuda_ptx_arch}" CACHE STRING "" FORCE)
message(STATUS "caffe-npair: CUDA build with ${CAFFE_NPAIR_NVCC}, sm ${CAFFE_NPAIR_CUDA_ARCH}, PTX ${cuda_ptx_arch}")
