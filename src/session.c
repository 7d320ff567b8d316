/* session.c - the session and its lock (see session.h). */
#include "session.h"

pthread_mutex_t fs_lock = PTHREAD_MUTEX_INITIALIZER;
struct session session;
