#include "prefetch/ngram_hasher.h"  // implementation in progress
