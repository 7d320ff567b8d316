/*
 * reap.c - what a server that is gone left running (mode "reap PID").
 *
 * runc runs each container's first process as its own child, so a server
 * killed with SIGKILL (its helpers die with it) would leave its sandboxes
 * running, their roots mounted. The zygote calls this when the server's end of
 * its pipe closes; a new server calls it for servers that died with their
 * zygote. Every process in the server's cgroups (cwsandbox-local-PID/<id>, in
 * every hierarchy) is killed, the roots it mounted (overlay mounts whose
 * source is cwsandbox-local-PID) are detached, and the cgroups are removed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"

/* Each cgroup directory of the server's, in every hierarchy, to `fn`. */
static int each_cgroup(const char *name, int (*fn)(const char *dir))
{
	const char *base = "/sys/fs/cgroup";
	char root[4096], dir[4096 + 512];
	int left = 0, v2 = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0;
	DIR *hs = v2 ? NULL : opendir(base);
	struct dirent *h = NULL;

	do {
		if (!v2 && !(h = readdir(hs)))
			break;
		if (!v2 && h->d_name[0] == '.')
			continue;
		snprintf(root, sizeof(root), "%s%s%s/%s", base, v2 ? "" : "/", v2 ? "" : h->d_name, name);
		DIR *d = opendir(root);
		if (!d)
			continue;
		for (struct dirent *e; (e = readdir(d));) {
			if (e->d_type != DT_DIR || e->d_name[0] == '.')
				continue;
			snprintf(dir, sizeof(dir), "%s/%s", root, e->d_name);
			left += fn(dir);
		}
		closedir(d);
		left += fn(root);
	} while (!v2);
	if (hs)
		closedir(hs);
	return left;
}

/* SIGKILL every process of a cgroup; how many there were. */
static int kill_procs(const char *dir)
{
	char path[4096 + 600];
	int n = 0;
	long pid;
	FILE *f;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	if (!(f = fopen(path, "re")))
		return 0;
	while (fscanf(f, "%ld", &pid) == 1)
		if (pid > 1 && kill((pid_t)pid, SIGKILL) == 0)
			n++;
	fclose(f);
	return n;
}

static int remove_dir(const char *dir)
{
	return rmdir(dir) < 0 && errno != ENOENT;
}

/* Detach the overlay mounts whose source is `name`, deepest first. */
static void detach_roots(const char *name)
{
	char line[8192], *targets[4096];
	int n = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return;
	while (n < 4096 && fgets(line, sizeof(line), f)) {
		/* ID PARENT MAJ:MIN ROOT TARGET OPTIONS [TAGS...] - TYPE SOURCE SUPER */
		char target[4096], type[64], source[256], *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", target) != 1 ||
		    sscanf(dash + 3, "%63s %255s", type, source) != 2)
			continue;
		if (!strcmp(type, "overlay") && !strcmp(source, name))
			targets[n++] = strdup(target);
	}
	fclose(f);
	while (n-- > 0) {
		if (targets[n] && umount2(targets[n], MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
			fprintf(stderr, "sbx-helper: reap: umount %s: %s\n", targets[n], strerror(errno));
		free(targets[n]);
	}
}

int reap_server(long server)
{
	char name[64];
	int tries;

	snprintf(name, sizeof(name), "cwsandbox-local-%ld", server);
	/* processes may fork while we kill: again until none is left (bounded) */
	for (tries = 0; tries < 50 && each_cgroup(name, kill_procs) > 0; tries++) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	detach_roots(name);
	/* a cgroup empties once its killed processes are reaped by their parents */
	for (tries = 0; tries < 100 && each_cgroup(name, remove_dir) > 0; tries++) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return 0;
}
