"""cdk-nag AwsSolutions checks, with every acknowledged finding and the reason it is acceptable here.

Findings that only one construct raises are acknowledged on that construct, next to the code that causes them
(`acknowledge()` below; the fleet's in infra/media_fleet.py), so an acknowledgement never covers anything else.
"""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

ACKNOWLEDGED = {
    "AwsSolutions-APIG4": "No API Gateway authorizer by design: the app checks the bearer API key on user routes and "
    "Twilio's X-Twilio-Signature on webhooks (Twilio cannot send IAM or JWT auth).",
    "AwsSolutions-EC23": "Twilio has no fixed IP range for webhooks and Media Streams: 80/443 must be open to all.",
    "AwsSolutions-EC28": "Detailed monitoring adds cost; the node exports Prometheus metrics and a health check.",
    "AwsSolutions-EC29": "The media node holds no state a rebuild from this template would not restore (calls live in "
    "DynamoDB); termination protection would only make `cdk destroy` fail.",
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": "The AWS-maintained minimal policy for a Lambda function's own logs.",
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]": "The AWS-maintained policy for Session Manager, used instead of SSH.",
    "AwsSolutions-IAM5[Resource::<CallsTableE368837E.Arn>/index/*]": "The table grant covers its own indexes (listing calls uses the by_created GSI).",
    "AwsSolutions-IAM5[Action::s3:GetBucket*]": "CDK asset read grant: the media node downloads its code.",
    "AwsSolutions-IAM5[Action::s3:GetObject*]": "CDK asset read grant: the media node downloads its code.",
    "AwsSolutions-IAM5[Action::s3:List*]": "CDK asset read grant: the media node downloads its code.",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*]": "CDK bootstrap asset bucket: read-only, objects of this app's deployments.",
    "AwsSolutions-L1": "Python 3.12 is the runtime the code and its tests are pinned to.",
    "AwsSolutions-SMG4": "Twilio and Gemini credentials are rotated in their consoles, not by a Lambda; the generated "
    "API key and stream secret are rotated by re-setting the secret and restarting.",
    "AwsSolutions-VPC7": "The VPC holds only the public media nodes (and in fleet mode the NLB), which bridge calls "
    "for Twilio; flow logs add cost without a consumer.",
}


def acknowledge(scope: Construct, reasons: dict[str, str]) -> None:
    """Acknowledge findings on `scope` and what it contains, each with its reason."""
    cdk.Validations.of(scope).acknowledge(*[cdk.Acknowledgment(id=rule, reason=why) for rule, why in reasons.items()])


def add_checks(app: cdk.App, stack: cdk.Stack) -> None:
    acknowledged = dict(ACKNOWLEDGED)
    if not cdk.Token.is_unresolved(stack.region):  # a concrete region appears in the asset bucket's name
        bucket = "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-{}/*]"
        acknowledged[bucket.format(stack.region)] = acknowledged[bucket.format("<AWS::Region>")]
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    acknowledge(stack, acknowledged)
