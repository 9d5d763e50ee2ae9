#include "pagoda_kernels.h"
