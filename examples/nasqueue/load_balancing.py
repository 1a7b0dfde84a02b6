# Added: the imports this README example leaves out.
import asyncio

from nas_queue import NASQueue

# Multiple workers sharing the load
async def worker(worker_id):
    queue = NASQueue("localhost", 4222, namespace="workers")
    await queue.connect()
    
    # All workers subscribe with same queue group
    await queue.subscribe_and_queue("tasks", queue_group="worker_pool")
    
    while True:
        msg = await queue.pop(timeout=2.0)
        if msg:
            print(f"Worker {worker_id}: {msg['message'].decode()}")
            # Process task...
        else:
            break
    
    await queue.disconnect()

# Dispatcher
async def dispatcher():
    queue = NASQueue("localhost", 4222, namespace="workers")
    await queue.connect()
    
    # Send tasks that will be distributed among workers
    for i in range(20):
        await queue.push("tasks", f"Task {i+1}")
    
    await queue.disconnect()

async def main():
    # Start 3 workers and dispatcher
    await asyncio.gather(
        dispatcher(),
        worker(1),
        worker(2),
        worker(3)
    )

asyncio.run(main())
