"""A client process that opens a stream, reads a few items and then stops reading.

usage: stuck_client.py URL ADDRESS ITEMS

Token from FAME_ADMISSION_TOKEN. Prints ``READING <n>`` once it read ``n``
items of ``retrieve_all_values``, then waits for ever without reading on or
cancelling, until it is killed: a consumer that died mid-stream.
"""

from __future__ import annotations

import os
import sys

import trio

import fame


async def main(url: str, address: str, items: int) -> None:
    async with fame.connect(url, token=os.environ["FAME_ADMISSION_TOKEN"]) as client:
        stream = client.proxy(address).retrieve_all_values().__aiter__()
        for _ in range(items):
            await stream.__anext__()
        print("READING", items, flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
