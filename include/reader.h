/* reader.h - reads of stream files: answered with what exists, parked while more may
 * come, EOF (or the stream's error) once it ended. Under fs_lock. */
#ifndef CWSFS_READER_H
#define CWSFS_READER_H

#include <fuse_lowlevel.h>
#include <stdint.h>

#include "node.h"

/* Answer a read of a stream node: now, or parked until bytes come, the stream ends or
 * the reader is interrupted. nonblock answers EAGAIN instead of parking. *shift is the
 * open file's skip over output dropped beyond the cap (starts 0; lives with the handle,
 * which the kernel keeps while a read is outstanding). */
void reader_read(fuse_req_t req, struct node *n, size_t size, off_t off, int nonblock,
                 uint64_t *shift);

/* Answer the open of a stream node (fi->fh already set) once its first byte exists
 * or it ended. Why: `tail -f` reads an empty file as a pipe, to its end, printing
 * nothing until then; a stream that opens with bytes in it is followed instead.
 * A FIFO's open waits for its writer in the same spirit. Interruptible; on failure
 * discard(fi->fh) undoes the handle. */
void reader_open(fuse_req_t req, struct node *n, struct fuse_file_info *fi,
                 void (*discard)(void *fh));

#endif
