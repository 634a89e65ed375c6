/*
 * The floor of a journal-mode commit: the system calls alone, no statefile.
 * Table 10's notes in BENCHMARKS.md ("Partial run P") quote its figures.
 *
 *   cc -O2 -o journal-floor journal-floor.c
 *   cd <a directory on the file system to measure>
 *   ./journal-floor wal  2000 1024   # a record over a preallocated ring + fdatasync
 *                                    # (what SQLite's WAL does per commit)
 *   ./journal-floor file 2000 1024   # the same, then create a temp file, write it and
 *                                    # rename it over the document (statefile's commit)
 *
 * Makes N untimed writes, then N timed ones; prints writes/s and the p50/p99 latency.
 * NOSYNC=1 leaves out the fdatasync (the CPU cost of the calls alone). Files made in
 * the current directory: journal, doc.json, doc.json.tmp.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  if (argc < 4 || (strcmp(argv[1], "wal") && strcmp(argv[1], "file"))) {
    fprintf(stderr, "usage: %s wal|file N SIZE\n", argv[0]);
    return 2;
  }
  int file = !strcmp(argv[1], "file");
  int n = atoi(argv[2]), size = atoi(argv[3]);
  int nosync = getenv("NOSYNC") != NULL;
  static char buf[1 << 16];
  if (n < 1 || size < 1 || size > (int)sizeof buf) {
    fprintf(stderr, "N >= 1, 1 <= SIZE <= %zu\n", sizeof buf);
    return 2;
  }
  memset(buf, 'x', sizeof buf);
  /* A 16 MiB ring, written once and synced: later records overwrite allocated blocks. */
  const long ring = 16L << 20;
  int j = open("journal", O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (j < 0) die("open journal");
  for (long o = 0; o < ring; o += sizeof buf)
    if (pwrite(j, buf, sizeof buf, o) != (ssize_t)sizeof buf) die("write journal");
  if (fsync(j)) die("fsync journal");
  int doc = open("doc.json", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (doc < 0 || write(doc, buf, size) != size || fsync(doc) || close(doc)) die("doc.json");
  int dir = open(".", O_RDONLY | O_DIRECTORY);
  if (dir < 0 || fsync(dir)) die("sync directory");
  long rec = (size + 4095) / 4096 * 4096, off = 0;
  double *lat = malloc(sizeof(double) * n), t0 = 0;
  if (!lat) die("malloc");
  for (int i = 0; i < 2 * n; i++) {
    if (i == n) t0 = now();
    double s = now();
    buf[0] = 'a' + i % 26;
    if (off + rec > ring) off = 0;
    if (pwrite(j, buf, rec, off) != rec) die("append");
    off += rec;
    if (!nosync && fdatasync(j)) die("fdatasync");
    if (file) {
      int t = open("doc.json.tmp", O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (t < 0 || write(t, buf, size) != size || close(t)) die("temp file");
      if (rename("doc.json.tmp", "doc.json")) die("rename");
    }
    if (i >= n) lat[i - n] = now() - s;
  }
  double dt = now() - t0;
  qsort(lat, n, sizeof(double), cmp);
  printf("%s%s, %d bytes: %.0f writes/s, p50 %.1f us, p99 %.1f us\n", argv[1],
         nosync ? " (no fdatasync)" : "", size, n / dt, lat[n / 2] * 1e6,
         lat[n * 99 / 100] * 1e6);
  return 0;
}
