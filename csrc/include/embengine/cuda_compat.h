// What a .cu file of csrc/cuda includes instead of the CUDA headers, so that the same kernels
// build for the GPU (nvcc) and for the CPU simulator (a host compiler with EMBENGINE_CUDA_SIM,
// see cuda_sim.h): the two differences in kernel source are spelled as macros here.
//   EMB_LAUNCH(kernel, grid, block, shared_bytes, stream)(args...)   kernel<<<...>>>(args...)
//   EMB_DYNAMIC_SHARED(type, name);                                 extern __shared__ type name[]
#pragma once

#if defined(EMBENGINE_CUDA_SIM)
#include "embengine/cuda_sim.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#define EMB_LAUNCH(kernel, grid, block, shared, stream) kernel<<<grid, block, shared, stream>>>
#define EMB_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
