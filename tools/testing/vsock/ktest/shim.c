// SPDX-License-Identifier: GPL-2.0
/* C shims and module parameters for vsock_ktest.ko (declarations only). */
#include "../../../../include/rvsock_shim.c"
#include <linux/moduleparam.h>

char *ktest_mode = "server";
module_param_named(mode, ktest_mode, charp, 0444);
MODULE_PARM_DESC(mode, "server (listen and echo records until unloaded), client (run, then report) or loopback (both)");
unsigned int ktest_port = 7000;
module_param_named(port, ktest_port, uint, 0444);
MODULE_PARM_DESC(port, "server: port to listen on; client: port to connect to");
unsigned int ktest_cid = 1;
module_param_named(cid, ktest_cid, uint, 0444);
MODULE_PARM_DESC(cid, "client: CID of the server");
unsigned int ktest_records = 10000;
module_param_named(records, ktest_records, uint, 0444);
MODULE_PARM_DESC(records, "client: records to send and check");
unsigned int ktest_seed = 1;
module_param_named(seed, ktest_seed, uint, 0444);
MODULE_PARM_DESC(seed, "client: seed of record sizes, fragmentation and contents");
unsigned int ktest_max_size = 1 << 20;
module_param_named(max_size, ktest_max_size, uint, 0444);
MODULE_PARM_DESC(max_size, "largest record in bytes (both roles)");
unsigned int ktest_hold;
module_param_named(hold, ktest_hold, uint, 0444);
MODULE_PARM_DESC(hold, "client: keep the connection, and a second one with half a record, open until unload");
