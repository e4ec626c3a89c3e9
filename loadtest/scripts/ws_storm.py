"""Spectator memory: opens N WebSocket spectators on a running tier router (raw asyncio sockets,
no third-party packages), optionally subscribed to tier 1, and prints the router's resident
memory (VmRSS) before, with them (3 s after the last opened) and after they left (3 s later).

    python3 loadtest/scripts/ws_storm.py HOST HTTP_PORT ROUTER_PID N SUBSCRIBE(0|1)

Run it on the router's machine (it reads /proc/ROUTER_PID/status). See docs/BENCHMARKS.md.
"""
import asyncio, base64, os, sys, time, json

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def frame(text):
    data = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    n = len(data)
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))

async def spectator(host, port, subscribe, hold):
    r, w = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    assert b" 101 " in head, head
    if subscribe:
        w.write(frame(json.dumps({"subscribe": {"tier": 1}})))
        await w.drain()
    async def drain():
        try:
            while True:
                if not await r.read(65536):
                    return
        except Exception:
            return
    task = asyncio.create_task(drain())
    await hold.wait()
    task.cancel()
    w.close()

async def main():
    host, port, pid, n, subscribe = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    before = rss_kib(pid)
    hold = asyncio.Event()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(spectator(host, port, subscribe, hold)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    await asyncio.sleep(3)
    during = rss_kib(pid)
    hold.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(3)
    after = rss_kib(pid)
    print(json.dumps({"spectators": n, "subscribed": subscribe, "rss_before_kib": before,
                      "rss_with_kib": during, "rss_after_kib": after,
                      "per_spectator_kib": round((during - before) / n, 1)}))

asyncio.run(main())
