/* clock.h — the controller's two clocks: monotonic milliseconds for
 * deadlines and heartbeats, and ISO 8601 UTC wall-clock text (microseconds,
 * "YYYY-MM-DDTHH:MM:SS.ffffffZ", which sorts as time) for records.
 * Threads: any; pure apart from reading the clocks. */
#ifndef IPPC_CLOCK_H
#define IPPC_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#define CLOCK_ISO_LEN 40 /* buffer size for clock_iso8601 */

int64_t clock_now_ms(void);
/* Milliseconds since the Unix epoch (wall clock: may jump). */
int64_t clock_wall_ms(void);
void clock_iso8601(char *buf, size_t size);

#endif
