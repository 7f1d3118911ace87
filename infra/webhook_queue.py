"""The end-of-call webhooks on AWS: an SQS queue with a dead-letter queue, and the small consumer Lambda.

Whoever completes a call's end queues a job (the control Lambda on Twilio's terminal status, a media node after
its last writes: both get `sqs:SendMessage` and WEBHOOK_QUEUE_URL through `grant_enqueue`). The consumer
(lambda_api/webhook_consumer.py, the control API's own bundle with another handler) attempts each job and backs
off through the message's visibility timeout; after 24 h of failures it moves the job to the dead-letter queue
itself. The redrive policy is the last guard for a message the consumer keeps failing on (a bug, a store down
for hours): `MAX_RECEIVES` is far above the ~20 receives a day of retries and the recording wait take.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.control_api import bundle_function
from infra.secrets import AppSecrets

CONSUMER_TIMEOUT_S = 60  # a batch of up to 10 deliveries at once, each at most 10 s, plus the store
MAX_RECEIVES = 100
BATCH_SIZE = 10


class WebhookQueue(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        code: lambda_.Code,
        architecture: lambda_.Architecture,
        table: dynamodb.ITable,
        secrets: AppSecrets,
    ) -> None:
        super().__init__(scope, cid)
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            retention_period=cdk.Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            visibility_timeout=cdk.Duration.seconds(6 * CONSUMER_TIMEOUT_S),  # AWS: at least 6x the function timeout
            retention_period=cdk.Duration.days(4),  # the retries take a day; a consumer outage may add some
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=MAX_RECEIVES),
        )
        self.consumer = bundle_function(
            self,
            "Consumer",
            code=code,
            architecture=architecture,
            handler="lambda_api.webhook_consumer.handler",
            memory_size=256,
            timeout_s=CONSUMER_TIMEOUT_S,
            environment={
                "CALL_STORE": f"dynamodb://{table.table_name}",
                "WEBHOOK_QUEUE_URL": self.queue.queue_url,
                "WEBHOOK_DLQ_URL": self.dead_letters.queue_url,
                "WEBHOOK_SECRET_SECRET_ARN": secrets.webhook_secret.secret_arn,
            },
            description="Phone voice agent: delivers end-of-call webhooks from SQS",
        )
        self.consumer.add_event_source(
            event_sources.SqsEventSource(self.queue, batch_size=BATCH_SIZE, report_batch_item_failures=True)
        )
        self.dead_letters.grant_send_messages(self.consumer)
        table.grant_read_write_data(self.consumer)
        secrets.webhook_secret.grant_read(self.consumer)  # only the secret that signs webhooks

    def grant_enqueue(self, grantee: iam.IGrantable) -> None:
        self.queue.grant_send_messages(grantee)

    @property
    def queue_url(self) -> str:
        return self.queue.queue_url
