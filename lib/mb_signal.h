/*  mb_signal — asking a process to stop.

    SIGTERM and SIGINT set a flag that loops check between requests, so the
    request in hand always finishes. The handlers are installed without
    SA_RESTART so blocking calls return EINTR and loops notice at once. */
#ifndef MB_SIGNAL_H
#define MB_SIGNAL_H

#include <stdbool.h>

/*  Installs the SIGTERM/SIGINT handlers and ignores SIGPIPE. */
void mb_signal_install(void);

/*  True once SIGTERM or SIGINT arrived (or mb_signal_request_stop()). */
bool mb_signal_stop_requested(void);

/*  Sets the flag by hand (tests, fatal paths). */
void mb_signal_request_stop(void);

#endif
