/*
 * A stand-in for sudo(8) on a fleet test unit (tests/src/fleet/login.rs): installed setuid root
 * as R/bin/sudo of a unit whose SSH sessions run as an unprivileged user (uid 65534).
 *
 * It refuses what Ubuntu 18.04's sudo refuses for a deploy: without the unit's NOPASSWD rule
 * (the file R/etc/trident-test/sudo-nopasswd), `sudo -n` fails with "a password is required"
 * and plain `sudo` with "no tty present"; options other than -n are refused (the deploy uses no
 * other). With the rule it becomes root and resets the environment as sudo's env_reset does:
 * TERM kept; PATH is secure_path (with R/bin first, standing in for the unit's /usr/bin); HOME,
 * USER, LOGNAME, SHELL of root; SUDO_USER/SUDO_UID/SUDO_GID/SUDO_COMMAND. Two test variables
 * pass through (TRIDENT_TEST_ROOT, TRIDENT_TEST_UNIT): the fleet finds and stops the processes
 * of a unit by them. The command is looked up in that PATH, as sudo does.
 *
 * It cannot show: sudoers syntax, PAM, requiretty, timestamps, or sudo's logging.
 *
 * Built by the fleet with -DUNIT_ROOT="\"R\"".
 */
#define _GNU_SOURCE
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef UNIT_ROOT
#error "build with -DUNIT_ROOT=\"\\\"/path/of/the/unit/root\\\"\""
#endif

static void record(int argc, char **argv, uid_t caller)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/var/log/fake-sudo.log", UNIT_ROOT);
    FILE *log = fopen(path, "a");
    if (!log)
        return;
    fprintf(log, "uid=%u", (unsigned)caller);
    for (int i = 1; i < argc; i++)
        fprintf(log, " %s", argv[i]);
    fputc('\n', log);
    fclose(log);
}

int main(int argc, char **argv)
{
    uid_t caller = getuid();
    gid_t caller_gid = getgid();
    int i = 1, non_interactive = 0;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        }
        if (!strcmp(argv[i], "-n") || !strcmp(argv[i], "--non-interactive")) {
            non_interactive = 1;
            continue;
        }
        if (argv[i][0] == '-') {
            fprintf(stderr, "sudo: option %s is not supported by the test stand-in\n", argv[i]);
            return 1;
        }
        break;
    }
    record(argc, argv, caller);
    if (i >= argc) {
        fprintf(stderr, "usage: sudo -n [--] command [arg ...]\n");
        return 1;
    }
    if (geteuid() != 0) {
        fprintf(stderr, "sudo: effective uid is not 0, is sudo installed setuid root?\n");
        return 1;
    }
    if (caller != 0) {
        char rule[4096];
        struct stat st;
        snprintf(rule, sizeof rule, "%s/etc/trident-test/sudo-nopasswd", UNIT_ROOT);
        if (stat(rule, &st) != 0) {
            if (non_interactive)
                fprintf(stderr, "sudo: a password is required\n");
            else
                fprintf(stderr, "sudo: no tty present and no askpass program specified\n");
            return 1;
        }
    }
    if (setgroups(0, NULL) != 0 || setgid(0) != 0 || setuid(0) != 0) {
        perror("sudo: cannot become root");
        return 1;
    }

    char path_var[4096];
    snprintf(path_var, sizeof path_var,
             "PATH=%s/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", UNIT_ROOT);
    struct passwd *pw = getpwuid(caller);
    char user[512], uid[64], gid[64], command[8192];
    snprintf(user, sizeof user, "SUDO_USER=%s", pw ? pw->pw_name : "nobody");
    snprintf(uid, sizeof uid, "SUDO_UID=%u", (unsigned)caller);
    snprintf(gid, sizeof gid, "SUDO_GID=%u", (unsigned)caller_gid);
    size_t used = (size_t)snprintf(command, sizeof command, "SUDO_COMMAND=%s", argv[i]);
    for (int k = i + 1; k < argc && used < sizeof command; k++)
        used += (size_t)snprintf(command + used, sizeof command - used, " %s", argv[k]);

    char *env[16];
    int n = 0;
    static const char *kept[] = {"TERM", "TRIDENT_TEST_ROOT", "TRIDENT_TEST_UNIT"};
    static char kept_buf[3][4096];
    for (int k = 0; k < 3; k++) {
        const char *v = getenv(kept[k]);
        if (v) {
            snprintf(kept_buf[k], sizeof kept_buf[k], "%s=%s", kept[k], v);
            env[n++] = kept_buf[k];
        }
    }
    env[n++] = path_var;
    env[n++] = "HOME=/root";
    env[n++] = "USER=root";
    env[n++] = "LOGNAME=root";
    env[n++] = "SHELL=/bin/bash";
    env[n++] = user;
    env[n++] = uid;
    env[n++] = gid;
    env[n++] = command;
    env[n] = NULL;

    const char *cmd = argv[i];
    if (strchr(cmd, '/')) {
        execve(cmd, argv + i, env);
    } else {
        char *dirs = strdup(path_var + strlen("PATH="));
        for (char *dir = strtok(dirs, ":"); dir; dir = strtok(NULL, ":")) {
            char full[4096];
            snprintf(full, sizeof full, "%s/%s", dir, cmd);
            if (access(full, X_OK) == 0)
                execve(full, argv + i, env);
        }
    }
    fprintf(stderr, "sudo: %s: command not found\n", cmd);
    return 1;
}
