/* reader.h - reads of stream files: answered with what exists, parked while more may
 * come, EOF (or the stream's error) once it ended. Under fs_lock. */
#ifndef CWSFS_READER_H
#define CWSFS_READER_H

#include <fuse_lowlevel.h>

#include "node.h"

/* Answer a read of a stream node: now, or parked until bytes come, the stream ends or
 * the reader is interrupted. nonblock answers EAGAIN instead of parking. */
void reader_read(fuse_req_t req, struct node *n, size_t size, off_t off, int nonblock);

#endif
