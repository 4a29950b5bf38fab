/*  mdp — constants of the Majordomo Protocol, MDP/0.1 (ZeroMQ RFC 7),
    and of its service-discovery extension MMI (ZeroMQ RFC 8).

    Client -> broker:  [empty] "MDPC01" service body...
    Broker -> client:  [empty] "MDPC01" service body...
    Worker <-> broker: [empty] "MDPW01" command ...
      READY      W->B  service
      REQUEST    B->W  client-address [empty] body...
      REPLY      W->B  client-address [empty] body...
      HEARTBEAT  both
      DISCONNECT both
    The leading empty frame is added by REQ sockets, by hand on DEALER. */
#ifndef MDP_H
#define MDP_H

#define MDPC_CLIENT "MDPC01"
#define MDPW_WORKER "MDPW01"

/*  Worker commands: one byte each, sent as a one-byte frame. */
#define MDPW_READY 0x01
#define MDPW_REQUEST 0x02
#define MDPW_REPLY 0x03
#define MDPW_HEARTBEAT 0x04
#define MDPW_DISCONNECT 0x05

/*  The musicbus compact framing (mb_client.h, mb_worker.h): a message
    holds at most MB_COMPACT_FRAMES_MAX frames, which the broker reads
    whole, so at most MB_COMPACT_PAIRS_MAX [client|service][body] pairs
    follow the command frame (and the client's id, on the broker's side). */
#define MB_COMPACT_FRAMES_MAX 64
#define MB_COMPACT_PAIRS_MAX ((MB_COMPACT_FRAMES_MAX - 2) / 2)

/*  MMI: services whose name starts with "mmi." are answered by the broker.
    mmi.service: body is a service name; reply "200" when it has workers,
    "404" when not, and "501" for any other mmi.* name. */
#define MMI_PREFIX "mmi."
#define MMI_SERVICE "mmi.service"

#endif
