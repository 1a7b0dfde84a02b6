import asyncio
from nas_queue import NASQueue

# Producer
async def producer():
    queue = NASQueue("localhost", 4222, namespace="tasks")
    await queue.connect()
    
    for i in range(10):
        await queue.push("work", f"Task #{i+1}")
        print(f"Produced: Task #{i+1}")
        await asyncio.sleep(0.5)
    
    await queue.disconnect()

# Consumer
async def consumer(worker_id):
    queue = NASQueue("localhost", 4222, namespace="tasks")
    await queue.connect()
    
    # Subscribe to receive tasks
    await queue.subscribe_and_queue("work")
    
    while True:
        msg = await queue.pop(timeout=1.0)
        if msg:
            print(f"Worker {worker_id} processing: {msg['message'].decode()}")
            await asyncio.sleep(1)  # Simulate work
        else:
            break
    
    await queue.disconnect()

# Run producer and consumers
async def main():
    await asyncio.gather(
        producer(),
        consumer(1),
        consumer(2)
    )

asyncio.run(main())
