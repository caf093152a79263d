/* Launcher action classes of the task API (reference/protocol.md §6.4, §6.5). */
#ifndef DF_API_LAUNCH_H
#define DF_API_LAUNCH_H

#include "dynflow/dynflow.h"

#define DF_BATCH_CLASS "Proxy::Dynflow::Action::Batch"
#define DF_GROUP_CLASS "Proxy::Dynflow::Action::SingleRunnerBatch"

/* SingleRunnerBatch: input {"input_hash", "launcher": {"operation", "callback", "options",
 * "action_class": the group runner class}}. */
extern const struct df_action_class df_group_launcher_class;

#endif
