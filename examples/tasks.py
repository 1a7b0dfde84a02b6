"""The first seed's task, and a small job for the throughput part of the demo."""

import time


def count_words(text):
    print(f"Counting words in: '{text[:20]}...'")
    time.sleep(1)  # Simulate work
    count = len(text.split())
    print(f"Word count: {count}")
    return count


async def square(x: int) -> int:
    """A small async job: runs on the supervisor's loop with no thread hop."""
    return x * x
